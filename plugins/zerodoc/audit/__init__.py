"""Audit: the tamper-evident record of who asked for whose evidence, why, and what they got."""
