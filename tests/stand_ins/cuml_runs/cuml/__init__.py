"""Stand-in for the `cuml` package (see tests/stand_ins/README.md)."""
__version__ = "26.08.00"
