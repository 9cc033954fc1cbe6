"""ZeroDoc: agency records to signed, purpose-bound evidence."""
