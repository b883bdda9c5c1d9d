"""Pure detection: bytes in, raw hits out. No I/O here."""
