"""Stand-ins for the outside systems a real site has (see tests/README.md)."""
