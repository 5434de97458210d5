"""signq: manage SMS signatures on the JSMS API for many tenants, through a Redis queue."""

__version__ = "0.1.0"
