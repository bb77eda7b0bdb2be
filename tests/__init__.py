"""The test suite: unit/ (hand-computed cases), family/ (one detector family), e2e/ (runs)."""
