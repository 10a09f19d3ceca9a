"""Agent Factory trust core: models, store, and the CLI shared by every plane."""

__version__ = "0.1.0"
