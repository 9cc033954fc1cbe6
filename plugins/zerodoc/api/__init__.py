"""Evidence API: signed, purpose-bound answers from published datasets to consuming services."""
