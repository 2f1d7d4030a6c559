"""Write a file through a temporary sibling and a rename: a reader never sees a half-written file."""

from __future__ import annotations

import json
import os
from collections.abc import Callable


def write_atomically(path: str | os.PathLike, write: Callable[[str], None]) -> str:
    """Call ``write(temporary_path)``, then move the result onto ``path`` in one rename; return ``path``.

    If ``write`` fails, the temporary file is removed and ``path`` keeps its previous content.
    """
    temporary = f"{path}.tmp-{os.getpid()}"
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
    return str(path)


def write_json_atomically(payload: object, path: str | os.PathLike, **dump_options) -> str:
    """Write ``payload`` as indented JSON (``dump_options`` go to ``json.dump``) to ``path`` atomically."""

    def write(temporary: str) -> None:
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, **{"indent": 2, **dump_options})
            handle.write("\n")

    return write_atomically(path, write)
