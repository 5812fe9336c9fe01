"""Tools over a checked protocol: `fmt`, `lint`, `diff` and `test` (a protocol's test file)."""
