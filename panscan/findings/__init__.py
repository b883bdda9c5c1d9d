"""The masking boundary: the only code that turns a raw card number into storable data."""
