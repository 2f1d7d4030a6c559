"""Small helpers with no knowledge of SPD, shared by the library, the examples and the benchmarks."""

from .atomic import write_atomically, write_json_atomically
from .paths import looks_like_a_local_path

__all__ = ["looks_like_a_local_path", "write_atomically", "write_json_atomically"]
