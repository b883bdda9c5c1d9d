"""Sources enumerate items (metadata only) and open them as byte streams."""
