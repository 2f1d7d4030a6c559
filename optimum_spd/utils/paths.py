"""Telling a local path from a Hub repo id, so a mistyped directory is reported as such and never sent to the Hub."""

from __future__ import annotations

import os


def looks_like_a_local_path(path: str) -> bool:
    """A Hub repo id is ``name`` or ``namespace/name``; anything else (``./x``, ``/x``, ``a/b/c``, ``~``) is local."""
    return path.startswith((".", "/", "~")) or path.count("/") > 1 or (os.sep != "/" and os.sep in path)
