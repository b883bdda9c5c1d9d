"""Report writers; they see masked findings only, never raw bytes."""

from panscan.sinks.base import FORMATS, Sink, Summary, open_sink

__all__ = ["FORMATS", "Sink", "Summary", "open_sink"]
