"""The ephemera command line (standard library only; installable alone from cli/)."""

__version__ = "0.2.0"
