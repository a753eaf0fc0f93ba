"""Small networks nnlc builds and trains itself (for the demo and the tests)."""
