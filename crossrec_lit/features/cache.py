"""On-disk embedding cache, and encoding item catalogues (vocabularies) through it.

:class:`EmbeddingCache` keeps one ``.npz`` file per encoder identity,
``<root>/<encoder name>-<sha256(identity)[:16]>.npz``, holding the sha256 of each text seen, the
matching float32 rows, the identity and a sha256 checksum of it all. New texts are appended by
rewriting the file atomically (temp file + ``os.replace``): a crash leaves the previous file. A file
that cannot be read or does not check out is logged as a warning, deleted and rebuilt.

:func:`encode_domains` / :func:`item_text_matrix` turn a text frame (``domain``, ``item``, ``text``,
as returned by ``DataSource.item_text()``) and item vocabularies into one matrix row per item id, in
vocabulary order.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from crossrec_lit.atomic import atomic_write
from crossrec_lit.errors import CrossRecError
from crossrec_lit.features.text import TextEncoder, _check_output, as_text_list

logger = logging.getLogger(__name__)

_FORMAT = 1
_ARRAYS = ("format", "identity", "keys", "vectors", "checksum")
_FILE = re.compile(r"^.+-[0-9a-f]{16}\.npz$")
_TEMP = re.compile(r"^\..+-[0-9a-f]{16}\.npz\..*\.tmp$")


def text_key(text: str) -> bytes:
    """The cache key of one text: sha256 of its UTF-8 bytes (32 bytes)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


class EmbeddingCache:
    """Embeddings on disk, keyed by encoder identity and the sha256 of each text.

    Args:
        root: folder for the cache files (created on first write).

    After each :meth:`get_or_encode`, ``last_stats`` holds ``texts`` (asked), ``unique`` (distinct
    texts) and ``encoded`` (texts the encoder had to encode). Two processes writing the same file at
    once never corrupt it; the later write may drop the other's new rows (they get re-encoded).
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser()
        if self.root.exists() and not self.root.is_dir():
            raise CrossRecError(f"cache root {self.root} is a file, not a folder", "pass a folder path for the embedding cache")
        self.last_stats: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"EmbeddingCache({str(self.root)!r})"

    def cache_path(self, encoder: TextEncoder) -> Path:
        """The file that holds ``encoder``'s embeddings."""
        _check_encoder(encoder)
        return self._path(_name(encoder), encoder.identity)

    def _path(self, name: str, identity: str) -> Path:
        slug = re.sub(r"[^A-Za-z0-9._]+", "-", str(name)).strip("-.")[:48] or "encoder"
        return self.root / f"{slug}-{hashlib.sha256(identity.encode()).hexdigest()[:16]}.npz"

    def clear(self) -> int:
        """Delete every cache file (and leftover temp file) under ``root``; returns how many."""
        if not self.root.is_dir():
            return 0
        removed = 0
        for p in self.root.iterdir():
            if p.is_file() and (_FILE.match(p.name) or _TEMP.match(p.name)):
                p.unlink(missing_ok=True)
                removed += 1
        return removed

    def get_or_encode(self, encoder: TextEncoder, texts: Sequence[str], *, progress: bool = False, batch_size: int | None = None) -> np.ndarray:
        """``(len(texts), encoder.dim)`` float32 rows aligned with ``texts``; only texts not cached for
        this encoder identity are encoded (each distinct text once). A cache hit returns the stored
        rows bit for bit."""
        _check_encoder(encoder)
        texts = as_text_list(texts)
        identity, dim = encoder.identity, int(encoder.dim)
        path = self._path(_name(encoder), identity)
        keys, vectors, stamp = self._load(path, identity, dim)
        index = _index(keys)
        digests = [text_key(t) for t in texts]
        missing: dict[bytes, str] = {}
        for d, t in zip(digests, texts):
            if d not in index and d not in missing:
                missing[d] = t
        self.last_stats = {"texts": len(texts), "unique": len(set(digests)), "encoded": len(missing)}
        if missing:
            new = encoder.encode(list(missing.values()), batch_size=batch_size, progress=progress)
            new = _check_output(new, len(missing), dim, f"{type(encoder).__name__}.encode")
            if not np.isfinite(new).all():
                raise CrossRecError(f"{type(encoder).__name__}.encode returned NaN or infinite values", "check the encoder; nothing was cached")
            new_keys = np.frombuffer(b"".join(missing), dtype=np.uint8).reshape(-1, 32)
            if _stamp(path) != stamp:  # someone else wrote meanwhile: keep their rows too
                keys, vectors, _ = self._load(path, identity, dim)
                index = _index(keys)
                fresh = np.array([bytes(k) not in index for k in new_keys], dtype=bool)
                new_keys, new = new_keys[fresh], new[fresh]
            keys = np.concatenate([keys, new_keys])
            vectors = np.concatenate([vectors, new])
            self._save(path, identity, keys, vectors)
            index = _index(keys)
        rows = np.fromiter((index[d] for d in digests), dtype=np.int64, count=len(digests))
        return vectors[rows]

    # ------------------------------------------------------------------ file format
    def _load(self, path: Path, identity: str, dim: int) -> tuple[np.ndarray, np.ndarray, tuple | None]:
        empty = (np.zeros((0, 32), dtype=np.uint8), np.zeros((0, dim), dtype=np.float32))
        stamp = _stamp(path)
        if stamp is None:
            return (*empty, None)
        try:
            # our own handle: np.load leaks the one it opens when the zip directory is damaged
            with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as z:
                absent = [a for a in _ARRAYS if a not in z.files]
                if absent:
                    problem = f"arrays {absent} missing"
                else:
                    arrays = {a: z[a] for a in _ARRAYS}
                    problem = _problem(arrays, identity, dim)
        except Exception as exc:  # a damaged zip raises many kinds: BadZipFile, EOFError, ValueError, OSError...
            problem = f"unreadable ({type(exc).__name__}: {exc})"
        if problem is None:
            return arrays["keys"], arrays["vectors"], stamp
        logger.warning("embedding cache %s is corrupt (%s); deleting it and re-encoding", path, problem)
        path.unlink(missing_ok=True)
        return (*empty, None)

    def _save(self, path: Path, identity: str, keys: np.ndarray, vectors: np.ndarray) -> None:
        arrays = {
            "format": np.array(_FORMAT, dtype=np.int64),
            "identity": np.array(identity),
            "keys": np.ascontiguousarray(keys, dtype=np.uint8),
            "vectors": np.ascontiguousarray(vectors, dtype=np.float32),
        }
        arrays["checksum"] = np.frombuffer(_checksum(identity, arrays["keys"], arrays["vectors"]), dtype=np.uint8)

        def write(tmp: str) -> None:
            with open(tmp, "wb") as fh:  # a file object: np.savez would append ".npz" to a name
                _write_npz(fh, arrays)

        atomic_write(path, write)


def _write_npz(fh, arrays: dict[str, np.ndarray]) -> None:
    np.savez(fh, **arrays)


def _checksum(identity: str, keys: np.ndarray, vectors: np.ndarray) -> bytes:
    h = hashlib.sha256()
    h.update(f"{_FORMAT}\0{identity}\0{keys.shape}\0{vectors.shape}\0".encode())
    h.update(keys.tobytes())
    h.update(vectors.tobytes())
    return h.digest()


def _problem(a: dict[str, np.ndarray], identity: str, dim: int) -> str | None:
    """Why the loaded arrays are not a valid cache for (identity, dim); None when they are."""
    keys, vectors = a["keys"], a["vectors"]
    if a["format"].shape != () or int(a["format"]) != _FORMAT:
        return f"format {a['format']!r}, expected {_FORMAT}"
    if a["identity"].shape != () or str(a["identity"]) != identity:
        return "written for another encoder identity"
    if keys.dtype != np.uint8 or keys.ndim != 2 or keys.shape[1] != 32:
        return f"keys have dtype {keys.dtype} and shape {keys.shape}, expected uint8 (n, 32)"
    if vectors.dtype != np.float32 or vectors.ndim != 2 or vectors.shape[0] != keys.shape[0]:
        return f"vectors have dtype {vectors.dtype} and shape {vectors.shape} for {keys.shape[0]} keys"
    if vectors.shape[1] != dim:
        return f"vectors are {vectors.shape[1]}-d but the encoder is {dim}-d"
    if a["checksum"].dtype != np.uint8 or a["checksum"].tobytes() != _checksum(identity, keys, vectors):
        return "checksum mismatch"
    if len(_index(keys)) != keys.shape[0]:
        return "duplicate keys"
    return None


def _index(keys: np.ndarray) -> dict[bytes, int]:
    flat = keys.tobytes()
    return {flat[i * 32 : (i + 1) * 32]: i for i in range(keys.shape[0])}


def _stamp(path: Path) -> tuple | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _name(encoder) -> str:
    return str(getattr(encoder, "name", type(encoder).__name__))


def _check_encoder(encoder) -> None:
    if not all(hasattr(encoder, a) for a in ("identity", "dim", "encode")):
        raise CrossRecError(
            f"{type(encoder).__name__} is not a text encoder",
            "pass a TextEncoder such as SentenceTransformerEncoder() or a fitted HashingTfidfEncoder",
        )


# ====================================================================== item catalogues
def encode_domains(
    text_frame: pd.DataFrame,
    vocabs: Mapping[str, object],
    encoder: TextEncoder,
    cache: EmbeddingCache | None = None,
    *,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """One ``(len(vocab), dim)`` float32 matrix per domain, rows in vocabulary order.

    ``vocabs`` maps a domain to a :class:`~crossrec_lit.data.interactions.Vocab` (anything with
    ``.ids``) or a sequence of item ids. All domains' texts go to the encoder in ONE call (through
    ``cache`` when given), so a first-time encoding pays the model's start-up once. Items with no
    text row, or whose text is empty or missing (NaN), get the encoder's embedding of the empty
    string ``""`` (for :class:`~crossrec_lit.features.text.HashingTfidfEncoder`, an all-zero row);
    items without a row are counted in a logged warning.
    """
    if not isinstance(vocabs, Mapping) or not vocabs:
        raise CrossRecError(
            "vocabs must be a non-empty dict {domain: vocabulary}", "pass e.g. {'Beauty': dm.source_item_vocab, 'Toys': dm.target_item_vocab}"
        )
    by_domain = _texts_by_domain(text_frame)
    texts, spans = [], {}
    for domain, vocab in vocabs.items():
        if isinstance(vocab, str):
            raise CrossRecError(f"the vocabulary of {domain!r} is a single string {vocab!r}", "pass a Vocab or a list of item ids")
        ids = [str(i) for i in (vocab.ids if hasattr(vocab, "ids") else vocab)]
        if domain not in by_domain:
            raise CrossRecError(
                f"the text frame has no rows for domain {domain!r} (it has {sorted(by_domain)})",
                "pass vocabularies keyed by the text frame's domain names",
            )
        lookup = by_domain[domain]
        found = lookup.reindex(ids)
        n_missing = int(found.isna().sum())
        if ids and n_missing == len(ids):
            raise CrossRecError(
                f"none of the {len(ids)} {domain!r} item ids (e.g. {ids[:3]}) has a text row (text ids e.g. {lookup.index[:3].tolist()})",
                "pass the vocabulary of the same data the text came from (ids are compared as strings)",
            )
        if n_missing:
            example = [i for i, t in zip(ids, found.isna()) if t][:3]
            logger.warning(
                "%d of %d %r items have no text row (e.g. %s); they get the embedding of the empty string", n_missing, len(ids), domain, example
            )
        spans[domain] = (len(texts), len(texts) + len(ids))
        texts.extend(found.fillna("").tolist())
    if cache is not None:
        matrix = cache.get_or_encode(encoder, texts, progress=progress)
    else:
        codes, uniques = pd.factorize(pd.Series(texts, dtype=object))
        matrix = _check_output(encoder.encode(list(uniques), progress=progress), len(uniques), int(encoder.dim), f"{type(encoder).__name__}.encode")
        matrix = matrix[codes] if len(texts) else np.zeros((0, int(encoder.dim)), dtype=np.float32)
    return {d: matrix[a:b] for d, (a, b) in spans.items()}


def item_text_matrix(
    vocab_ids,
    text_frame: pd.DataFrame,
    domain: str,
    encoder: TextEncoder,
    cache: EmbeddingCache | None = None,
    *,
    progress: bool = False,
) -> np.ndarray:
    """One row per item id of ``vocab_ids`` (a Vocab, or ids in index order) in ``domain``.

    Items with no text row, or with empty or missing text, get the encoder's embedding of the empty
    string ``""`` -- the same row for all of them (all-zero for the hashing TF-IDF baseline). To
    encode several domains, call :func:`encode_domains` once instead.
    """
    return encode_domains(text_frame, {domain: vocab_ids}, encoder, cache, progress=progress)[domain]


def _texts_by_domain(frame: pd.DataFrame) -> dict[str, pd.Series]:
    if not isinstance(frame, pd.DataFrame):
        raise CrossRecError(f"item text must be a DataFrame, got {type(frame).__name__}", "pass source.item_text() (columns domain, item, text)")
    absent = [c for c in ("domain", "item", "text") if c not in frame.columns]
    if absent:
        raise CrossRecError(f"item text frame lacks column(s) {absent}", "provide columns domain, item, text")
    text = frame["text"].map(lambda t: "" if t is None or (isinstance(t, float) and np.isnan(t)) else str(t))
    f = pd.DataFrame({"domain": frame["domain"].astype(str).to_numpy(), "item": frame["item"].astype(str).to_numpy(), "text": text.to_numpy()})
    f = f.drop_duplicates()
    dup = f.duplicated(["domain", "item"], keep=False)
    if dup.any():
        d, i = f.loc[dup, ["domain", "item"]].iloc[0]
        n = int((dup & (f["item"] == i) & (f["domain"] == d)).sum())
        raise CrossRecError(f"item {i!r} of domain {d!r} has {n} different texts", "keep one text row per (domain, item)")
    return {d: g.set_index("item")["text"] for d, g in f.groupby("domain", sort=True)}
