"""The version of Riera (one place; the package and its records read it here)."""

__version__ = "0.1.0"
