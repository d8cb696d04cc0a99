"""Fetch a data file on explicit request, atomically and optionally checksum-verified.

Nothing in the package calls this behind the user's back: loaders only read local paths, and a
chapter or user downloads first, then points a loader at the result.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from crossrec_lit.errors import CrossRecError

_CHUNK = 1 << 20


def download(
    url: str,
    dest: str | Path,
    *,
    sha256: str | None = None,
    overwrite: bool = False,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` to ``dest`` and return the file's path.

    ``dest`` is the target file, or an existing folder (the file then takes the URL's last path
    segment as its name). The data goes to a temporary file in the same folder, renamed into place
    only once complete, so an interrupted download never leaves a half file under the final name.
    With ``sha256`` the content is verified (a mismatch deletes the download and is an error). An
    existing ``dest`` is kept unless ``overwrite=True``; with ``sha256`` it is verified first.
    """
    expected = _check_digest(sha256)
    dest = _target(url, dest)
    if dest.exists() and not overwrite:
        if expected is not None and _file_digest(dest) != expected:
            raise CrossRecError(f"{dest} exists but its sha256 is not {expected}", "delete it or pass overwrite=True to download it again")
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part", delete=False)
    temp = Path(handle.name)
    try:
        with handle:
            got = _fetch(url, handle, timeout)
    except BaseException as exc:
        temp.unlink(missing_ok=True)
        # ValueError: a malformed URL; URLError/OSError: unreachable host, HTTP error, full disk.
        if isinstance(exc, (urllib.error.URLError, OSError, ValueError)):
            raise CrossRecError(f"could not download {url} ({exc})", "check the URL and your network connection") from None
        raise
    if expected is not None and got != expected:
        temp.unlink(missing_ok=True)
        raise CrossRecError(
            f"download of {url} has sha256 {got}, expected {expected}",
            "check the URL and checksum; the source may have changed or the transfer was damaged",
        )
    # NamedTemporaryFile creates owner-only files; a data file should read like any other download.
    temp.chmod(0o644)
    os.replace(temp, dest)
    return dest


def _check_digest(sha256: str | None) -> str | None:
    if sha256 is None:
        return None
    value = str(sha256).strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", value):
        raise CrossRecError(f"sha256 must be 64 hexadecimal characters, got {sha256!r}", "pass the file's hex SHA-256 digest or None")
    return value


def _target(url: str, dest: str | Path) -> Path:
    dest = Path(dest).expanduser()
    if dest.is_dir():
        name = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path)).name
        if not name:
            raise CrossRecError(f"cannot name the file for {url} (the URL ends with '/')", "pass dest as a file path, not a folder")
        dest = dest / name
    return dest


def _fetch(url: str, handle, timeout: float) -> str:
    """Stream ``url`` into ``handle``; the SHA-256 of what was written."""
    digest = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=timeout) as response:
        while chunk := response.read(_CHUNK):
            digest.update(chunk)
            handle.write(chunk)
    return digest.hexdigest()


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
