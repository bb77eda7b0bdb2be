"""Parity: detcli against the official implementations, and exactness checks."""
