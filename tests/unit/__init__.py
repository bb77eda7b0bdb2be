"""Small hand-computed cases of one module each."""
