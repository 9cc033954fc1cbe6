"""Publish zone: immutable dataset versions and an atomically switched "current" pointer."""
