"""Readers for the public Amazon review data: P5 5-core sequences, raw review JSON and metadata titles.

Nothing here reads at import time or touches the network; every reader takes the path it reads.
Ids stay strings throughout: ASINs such as ``0001234567`` lose meaning as numbers.
"""

from __future__ import annotations

import ast
import gzip
import html
import json
import os
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import numpy as np
import pandas as pd

from crossrec_lit.data.interactions import InteractionTable
from crossrec_lit.data.sources.files import require_file
from crossrec_lit.errors import CrossRecError

DATA_ENV_VAR = "CROSSREC_DATA"
SEQUENCE_SUFFIX = "_user_sequence.txt.gz"
TEXT_SUFFIX = "_item_text.txt.gz"
# What a damaged .gz raises: a bad header or CRC, a file cut short, or corrupt deflate data.
_GZIP_ERRORS = (gzip.BadGzipFile, EOFError, zlib.error)
_DATA_FIX = f"pass root= the folder holding the P5 files, or set {DATA_ENV_VAR} to it"


# ====================================================================== data root
def default_data_root() -> Path | None:
    """Where the P5 files probably are: ``$CROSSREC_DATA``, else the first existing candidate folder.

    Candidates are ``<repo>/../shared/data/amazon_p5`` for a source checkout (``<repo>`` holds the
    ``crossrec_lit`` package folder), then ``../shared/data/amazon_p5`` and
    ``../../shared/data/amazon_p5`` relative to the working directory (a notebook run from ``book/``).
    Returns None when nothing is found; the environment variable is returned as given, existing or not,
    so that :func:`resolve_data_root` can say it is wrong instead of silently looking elsewhere.
    """
    env = os.environ.get(DATA_ENV_VAR, "").strip()
    if env:
        return Path(env).expanduser()
    repo = Path(__file__).resolve().parents[3]
    cwd = Path.cwd()
    relative = Path("shared") / "data" / "amazon_p5"
    for candidate in (repo / ".." / relative, cwd / ".." / relative, cwd / ".." / ".." / relative):
        if candidate.is_dir():
            return candidate.resolve()
    return None


def resolve_data_root(root: str | Path | None = None) -> Path:
    """``root`` if given, else :func:`default_data_root`; a CrossRecError when that is not a folder."""
    if root is None:
        found = default_data_root()
        if found is None:
            raise CrossRecError(f"no data folder given and none found (${DATA_ENV_VAR} unset, no ../shared/data/amazon_p5)", _DATA_FIX)
        root = found
    return _require_root(root)


# SHA-256 of each P5 file's *uncompressed* text and its line count (one line per user or item), as
# read from the files this book was built on: a digest of the text, not of the .gz, so that a copy
# compressed by another gzip (or level) still checks out.
P5_CHECKSUMS: dict[str, tuple[str, int]] = {
    "Beauty_user_sequence.txt.gz": ("47197cbee7bdc1896926e10d96b807dce0aecb9a1f0c2ccc887c21090237c9b7", 22363),
    "Beauty_item_text.txt.gz": ("1a90f934fe506747f094b181f791ece593e2f86bb15e5420d910e6de4882b456", 12101),
    "Sports_user_sequence.txt.gz": ("240fd0484501ca53769c016cb1bc674ac7e420aef562b88cea1439b94a3ba044", 35598),
    "Sports_item_text.txt.gz": ("710b6d9b661aebcd065b861e4076f5e3cc66bdd9735e462ca2db90d5cc951593", 18357),
    "Toys_user_sequence.txt.gz": ("9c2f2cce5323c5e5fd840896a68f0274aba4c241c54f0bc77ac9183094004071", 19412),
    "Toys_item_text.txt.gz": ("bce5c0028efdb6ec87033021087c9251eb64d6dfc77d791c47837c830b9d7f19", 11924),
}


def verify_amazon_p5(root: str | Path | None = None) -> pd.DataFrame:
    """Check the P5 files in ``root`` (default: :func:`resolve_data_root`) against :data:`P5_CHECKSUMS`.

    One row per known file: ``file``, ``present``, ``lines``, ``sha256`` (of the uncompressed text),
    ``expected_sha256`` and ``ok``. A damaged or different file shows ``ok=False``; it is not an error,
    so that a notebook can show the table and the reader decide.
    """
    import hashlib

    root = resolve_data_root(root)
    rows = []
    for name, (expected, expected_lines) in P5_CHECKSUMS.items():
        path = root / name
        row = {"file": name, "present": path.is_file(), "lines": None, "sha256": None, "expected_sha256": expected, "expected_lines": expected_lines}
        if row["present"]:
            digest, lines = hashlib.sha256(), 0
            try:
                with gzip.open(path, "rb") as handle:
                    for block in iter(lambda: handle.read(1 << 20), b""):
                        digest.update(block)
                        lines += block.count(b"\n")
                row.update(lines=lines, sha256=digest.hexdigest())
            except _GZIP_ERRORS + (OSError,):
                row.update(sha256="unreadable")
        row["ok"] = row["sha256"] == expected and row["lines"] == expected_lines
        rows.append(row)
    return pd.DataFrame(rows)


def available_p5_domains(root: str | Path) -> list[str]:
    """Domains with a ``<Domain>_user_sequence.txt.gz`` file in ``root``, sorted."""
    return _domains_with(_require_root(root), SEQUENCE_SUFFIX)


def _require_root(root: str | Path | None) -> Path:
    if root is None:
        raise CrossRecError(
            "no data folder given (root=None)", f"pass root=resolve_data_root() or the folder itself, or set {DATA_ENV_VAR}"
        )
    path = Path(root).expanduser()
    if not path.is_dir():
        raise CrossRecError(f"data folder {path} does not exist", _DATA_FIX)
    return path


def _domains_with(root: Path, suffix: str) -> list[str]:
    return sorted(p.name[: -len(suffix)] for p in root.glob(f"*{suffix}") if p.is_file())


# ====================================================================== P5 files
def load_amazon_p5(root: str | Path, domains: str | Sequence[str]) -> InteractionTable:
    """Interactions of the P5 5-core ``<Domain>_user_sequence.txt.gz`` files in ``root``.

    Each line is ``<reviewerID> <asin_1> ... <asin_n>``, oldest first; ``position`` is the 0-based
    place of the item in that line. There are no ratings or timestamps (implicit feedback).
    """
    root = _require_root(root)
    frames = [_read_sequences(_domain_file(root, name, SEQUENCE_SUFFIX), name) for name in _domain_list(domains)]
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    return InteractionTable(frame, copy=False)


def load_amazon_p5_text(root: str | Path, domains: str | Sequence[str]) -> pd.DataFrame:
    """Item text of the P5 ``<Domain>_item_text.txt.gz`` files: columns ``domain``, ``item``, ``text``.

    Each line is ``<asin> <short text>``; the text may be empty (one Beauty item has none), which
    stays as the empty string so that every item keeps a row.
    """
    root = _require_root(root)
    frames = [_read_item_text(_domain_file(root, name, TEXT_SUFFIX), name) for name in _domain_list(domains)]
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def _domain_list(domains: str | Sequence[str]) -> list[str]:
    names = [domains] if isinstance(domains, str) else list(domains) if domains is not None else []
    if not names:
        raise CrossRecError("no domains given", "pass a domain name such as 'Beauty' or a list of them")
    if not all(isinstance(n, str) and n for n in names):
        raise CrossRecError(f"domain names must be non-empty strings, got {names}", "pass names such as ['Beauty', 'Toys']")
    if len(set(names)) != len(names):
        raise CrossRecError(f"domain listed twice in {names}", "list each domain once")
    return names


def _domain_file(root: Path, domain: str, suffix: str) -> Path:
    path = root / f"{domain}{suffix}"
    if not path.is_file():
        available = _domains_with(root, suffix)
        raise CrossRecError(
            f"no {path.name} in {root} (domains there: {available or 'none'})",
            f"use one of {available}" if available else f"point root at the folder holding the *{suffix} files",
        )
    return path


def _read_lines(path: Path) -> list[str]:
    """All lines of a gzip text file, with damage reported as a CrossRecError naming the file."""
    require_file(path, "data file")
    try:
        with gzip.open(path, "rb") as handle:
            raw = handle.read()
    except _GZIP_ERRORS as exc:
        raise CrossRecError(f"{path} is a damaged or truncated gzip file ({exc})", "download or copy the file again") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CrossRecError(f"{path} is not UTF-8 text ({exc})", "convert the file to UTF-8 or copy it again") from None
    lines = text.splitlines()
    if not any(line.strip() for line in lines):
        raise CrossRecError(f"{path} has no data lines", "copy the file again; a P5 file has one line per user or item")
    return lines


def _read_sequences(path: Path, domain: str) -> pd.DataFrame:
    # One split() per line and flat numpy arrays afterwards: no Python object per interaction
    # beyond the token strings themselves, which keeps 300k interactions well under a second.
    tokens = [line.split() for line in _read_lines(path)]
    lengths = np.fromiter(map(len, tokens), dtype=np.int64, count=len(tokens))
    lonely = np.flatnonzero(lengths == 1)
    if lonely.size:
        line = int(lonely[0])
        raise CrossRecError(
            f"{path} line {line + 1}: user {tokens[line][0]!r} has no items",
            "each line must be '<user> <item_1> ... <item_n>'; drop or repair that line",
        )
    flat = np.fromiter(chain.from_iterable(tokens), dtype=object, count=int(lengths.sum()))
    lines = np.flatnonzero(lengths > 0)  # blank lines carry nothing
    starts = (np.cumsum(lengths) - lengths)[lines]
    users = flat[starts]
    duplicated = pd.Index(users).duplicated()
    if duplicated.any():
        user = users[np.flatnonzero(duplicated)[0]]
        where = (lines[users == user] + 1).tolist()
        raise CrossRecError(
            f"{path}: user {user!r} has more than one line (lines {where})", "merge that user's lines into one, oldest item first"
        )
    is_user = np.zeros(flat.size, dtype=bool)
    is_user[starts] = True
    n_items = lengths[lines] - 1
    offsets = np.repeat(np.cumsum(n_items) - n_items, n_items)
    return pd.DataFrame(
        {
            "user": np.repeat(users, n_items),
            "item": flat[~is_user],
            "domain": domain,
            "position": np.arange(int(n_items.sum()), dtype=np.int64) - offsets,
        }
    )


def _read_item_text(path: Path, domain: str) -> pd.DataFrame:
    items, texts, line_of = [], [], {}
    for number, line in enumerate(_read_lines(path), start=1):
        item, _, text = line.strip().partition(" ")
        if not item:
            continue
        if item in line_of:
            raise CrossRecError(f"{path}: item {item!r} has two text lines ({line_of[item]} and {number})", "keep one line per item")
        line_of[item] = number
        items.append(item)
        texts.append(" ".join(text.split()))
    return pd.DataFrame({"domain": domain, "item": items, "text": texts})


# ====================================================================== raw review JSON
@dataclass(frozen=True)
class _ReviewSchema:
    name: str
    user: str
    items: tuple[str, ...]  # first present wins
    rating: str
    time: str
    time_divisor: int  # to Unix seconds


_SCHEMAS = (
    # 2014 and 2018 share field names; 2018 only adds fields (vote, style, verified, image) we ignore.
    _ReviewSchema("2014/2018", "reviewerID", ("asin",), "overall", "unixReviewTime", 1),
    # 2023 reviews are keyed by the parent product; timestamps are in milliseconds.
    _ReviewSchema("2023", "user_id", ("parent_asin", "asin"), "rating", "timestamp", 1000),
)


def load_amazon_reviews(
    path: str | Path,
    domain: str,
    *,
    meta_path: str | Path | None = None,
    min_rating: float | None = None,
) -> InteractionTable:
    """Interactions from a raw Amazon review file (JSON lines, optionally ``.gz``).

    Reads the 2014 and 2018 releases (``reviewerID``, ``asin``, ``overall``, ``unixReviewTime``),
    the 2023 release (``user_id``, ``parent_asin`` or ``asin``, ``rating``, ``timestamp`` in ms,
    converted to seconds) and the older files written as Python dict literals. The schema is taken
    from the first record; a record of another schema is an error. ``rating`` and ``timestamp`` are
    kept, and ``position`` follows timestamp order (file order breaks ties). ``min_rating`` drops
    reviews rated below it. ``meta_path`` (a metadata file, see :func:`load_amazon_metadata_titles`)
    keeps only the items that have a non-empty title there, as text-based models need.
    """
    if not isinstance(domain, str) or not domain:
        raise CrossRecError(f"domain must be a non-empty string, got {domain!r}", "pass the store's name, e.g. domain='Beauty'")
    path = require_file(path, "review file")
    users, items, ratings, times, numbers = [], [], [], [], []
    schema: _ReviewSchema | None = None
    for number, record in _iter_records(path):
        if schema is None:
            schema = _detect_review_schema(record, path, number)
        user, item = _review_ids(record, schema, path, number)
        users.append(user)
        items.append(item)
        ratings.append(_number(record.get(schema.rating), schema.rating, path, number))
        times.append(_number(record.get(schema.time), schema.time, path, number))
        numbers.append(number)
    if schema is None:
        raise CrossRecError(f"review file {path} has no records", "check the file; it should hold one JSON review per line")
    frame = pd.DataFrame({"user": users, "item": items, "domain": domain})
    for column, values, divisor in (("rating", ratings, None), ("timestamp", times, schema.time_divisor)):
        missing = [n for n, v in zip(numbers, values) if v is None]
        if len(missing) == len(values):
            continue  # the field is absent everywhere: the table simply has no such column
        if missing:
            field = schema.rating if column == "rating" else schema.time
            raise CrossRecError(
                f"{path} line {missing[0]}: no {field!r} field ({len(missing)} record(s) lack it)", "drop those records or fill the field"
            )
        array = np.asarray(values, dtype=np.float64)
        frame[column] = array if divisor is None else (array.astype(np.int64) // divisor)
    if min_rating is not None:
        frame = _keep_rated(frame, min_rating, path)
    if meta_path is not None:
        frame = _keep_titled(frame, meta_path, path)
    try:
        return InteractionTable(frame, copy=False)
    except CrossRecError as exc:
        raise CrossRecError(f"{path}: {exc.problem}", exc.fix) from None


def load_amazon_metadata_titles(path: str | Path) -> pd.DataFrame:
    """Item titles from an Amazon metadata file: columns ``item`` and ``text``.

    Reads ``asin``/``title`` (2014, 2018) and ``parent_asin``/``title`` (2023) records, as JSON
    lines or Python dict literals, optionally ``.gz``. HTML entities (``&amp;``) are decoded and
    whitespace collapsed; a missing title becomes the empty string. An item listed twice keeps its
    first record (the 2018 files repeat some).
    """
    path = require_file(path, "metadata file")
    items, texts = [], []
    key = None
    for number, record in _iter_records(path):
        if key is None:
            key = "parent_asin" if "parent_asin" in record else "asin" if "asin" in record else None
            if key is None:
                raise CrossRecError(
                    f"{path} line {number}: neither 'asin' nor 'parent_asin' in record (fields: {sorted(record)[:12]})",
                    "pass an Amazon metadata file (meta_*.json or meta_*.jsonl)",
                )
        item = record.get(key)
        if item is None or str(item) == "":
            raise CrossRecError(f"{path} line {number}: no {key!r} field", f"drop that line or give it an {key}")
        title = record.get("title")
        items.append(str(item))
        texts.append(" ".join(html.unescape(title).split()) if isinstance(title, str) else "")
    if key is None:
        raise CrossRecError(f"metadata file {path} has no records", "check the file; it should hold one JSON record per line")
    frame = pd.DataFrame({"item": items, "text": texts})
    return frame.drop_duplicates("item", keep="first").reset_index(drop=True)


def _iter_records(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, record) for every non-blank line of a JSON-lines or dict-literal file."""
    with path.open("rb") as probe:
        compressed = probe.read(2) == b"\x1f\x8b"
    opener = gzip.open if compressed else open
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                line = line.strip()
                if line:
                    yield number, _parse_record(line, path, number)
    except _GZIP_ERRORS as exc:
        raise CrossRecError(f"{path} is a damaged or truncated gzip file ({exc})", "download or copy the file again") from None
    except UnicodeDecodeError as exc:
        raise CrossRecError(f"{path} is not UTF-8 text ({exc})", "convert the file to UTF-8 or copy it again") from None


def _parse_record(line: str, path: Path, number: int) -> dict:
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        # The 2014 metadata (and some review dumps) were written with Python's repr, not JSON.
        try:
            record = ast.literal_eval(line)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            raise CrossRecError(f"{path} line {number} is neither JSON nor a Python dict literal", "repair or drop that line") from None
    if not isinstance(record, dict):
        raise CrossRecError(f"{path} line {number} holds a {type(record).__name__}, not a record", "each line must be one JSON object")
    return record


def _detect_review_schema(record: dict, path: Path, number: int) -> _ReviewSchema:
    for schema in _SCHEMAS:
        if schema.user in record:
            return schema
    raise CrossRecError(
        f"{path} line {number}: no user field ('reviewerID' or 'user_id'); fields are {sorted(record)[:12]}",
        "pass an Amazon review file from the 2014, 2018 or 2023 release",
    )


def _review_ids(record: dict, schema: _ReviewSchema, path: Path, number: int) -> tuple[str, str]:
    user = record.get(schema.user)
    if user is None or user == "":
        others = [s for s in _SCHEMAS if s is not schema and s.user in record]
        if others:
            raise CrossRecError(
                f"{path} line {number} uses the {others[0].name} fields but the file started with the {schema.name} fields",
                "keep one release's reviews per file",
            )
        raise CrossRecError(f"{path} line {number}: no user field {schema.user!r}", "drop that line or give it a user")
    item = next((record[k] for k in schema.items if record.get(k) not in (None, "")), None)
    if item is None:
        fields = " or ".join(map(repr, schema.items))
        raise CrossRecError(f"{path} line {number}: no item field ({fields})", "drop that line or give it an item")
    return str(user), str(item)


def _number(value, field: str, path: Path, number: int) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise CrossRecError(f"{path} line {number}: {field}={value!r} is not a number", "repair or drop that line") from None


def _keep_rated(frame: pd.DataFrame, min_rating: float, path: Path) -> pd.DataFrame:
    if "rating" not in frame.columns:
        raise CrossRecError(f"{path} has no ratings, so min_rating cannot apply", "leave out min_rating")
    kept = frame[frame["rating"] >= float(min_rating)]
    if kept.empty:
        raise CrossRecError(f"{path}: no review is rated {min_rating} or higher", "lower min_rating or leave it out")
    return kept.reset_index(drop=True)


def _keep_titled(frame: pd.DataFrame, meta_path: str | Path, path: Path) -> pd.DataFrame:
    titles = load_amazon_metadata_titles(meta_path)
    titled = titles.loc[titles["text"].str.len() > 0, "item"]
    kept = frame[frame["item"].isin(titled)]
    if kept.empty:
        raise CrossRecError(
            f"no item of {path} has a title in {meta_path}", "check that the metadata file belongs to the same category and release"
        )
    return kept.reset_index(drop=True)
