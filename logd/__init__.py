"""logd: a log daemon that takes logs in, routes them, and writes them out."""

__version__ = "0.1.0"
