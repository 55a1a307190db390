"""umami-backfill: historical analytics into Umami."""

__version__ = "0.1.0"
