"""The version, in a module of its own: the server side reads it without importing the package root."""

__version__ = "0.1.0"
