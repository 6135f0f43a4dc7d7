"""The ephemera command line (standard library only)."""
