"""What several benchmarks share: loading the official checkouts."""
