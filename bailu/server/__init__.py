"""HTTP protocols: parse requests into calls, encode event streams into the wire."""
