"""One detector family's architecture, assignment, losses, transforms and parity."""
