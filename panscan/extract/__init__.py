"""Turning containers and encodings into the byte streams a person would read."""
