"""Hand-written references the benchmark compares Trellis with (no Trellis code inside)."""
