"""Report writers; they see masked findings only, never raw bytes."""

from panscan.sinks.base import FORMATS, Sink, Summary, format_size, open_sink

__all__ = ["FORMATS", "Sink", "Summary", "format_size", "open_sink"]
