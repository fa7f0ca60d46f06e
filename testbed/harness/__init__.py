"""What starts the real processes the tests and benchmarks run against (see tests/README.md)."""
