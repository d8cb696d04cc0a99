"""sha256 of a file's content, computed once per process while the file's size and time stay.

Cache keys (data files in a trial's key, the text model's files in the text cache's key) ask for
these hashes on every trial; hashing a 100 MB folder each time would cost more than some trials.
"""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache


def content_digest(path: str | os.PathLike) -> str:
    """Hex sha256 of the file's bytes (the size and modification time only key the memo: a file
    edited in place is hashed again)."""
    st = os.stat(path)
    return _digest(str(path), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=256)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()
