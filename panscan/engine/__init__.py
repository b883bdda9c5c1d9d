"""Orchestration: sources to workers to state and sinks."""
