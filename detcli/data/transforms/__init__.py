"""Per-family image/box transforms; shared geometry lives in ``common``."""
