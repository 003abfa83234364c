"""v4code: a command-line coding agent built around a 1M-token context."""

__version__ = "0.1.0"
