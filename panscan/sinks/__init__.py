"""Report writers; they see masked findings only, never raw bytes."""
