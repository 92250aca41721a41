"""Command-line entry points (one module per job); each has ``main(argv=None) -> int``."""
