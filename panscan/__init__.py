"""panscan: find card numbers and over-age data across AWS storage and local volumes."""

__version__ = "0.1.0"
