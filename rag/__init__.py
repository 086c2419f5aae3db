"""Extractive, cited question answering over a local Chinese archive."""

__version__ = "0.1.0"
