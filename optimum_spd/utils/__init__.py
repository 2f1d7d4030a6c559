"""Small helpers with no knowledge of SPD, shared by the library, the examples and the benchmarks."""

from .atomic import write_atomically, write_json_atomically

__all__ = ["write_atomically", "write_json_atomically"]
