"""Programs given to `ds-replica -e` in place of ssh (see tests/README.md)."""
