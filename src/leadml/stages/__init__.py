"""The I/O shells of the entry points: the only layer that reads configs and files."""
