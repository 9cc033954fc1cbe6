"""Agency sources: the synthetic generator, server loaders and extraction to the raw zone."""
