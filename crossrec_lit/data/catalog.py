"""Data sources as small configurable objects, so a YAML config can name where data comes from.

A source knows how to ``load()`` an :class:`InteractionTable` (and, where it has any, the items'
text) and how to describe itself for cache keys. The DataModules take a source; the loader
functions in :mod:`crossrec_lit.data.sources` do the actual reading.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import pandas as pd

from crossrec_lit.data.interactions import InteractionTable
from crossrec_lit.errors import CrossRecError
from crossrec_lit.file_digest import content_digest


class DataSource:
    """Where interactions come from. Subclasses implement :meth:`load`."""

    def load(self) -> InteractionTable:
        raise NotImplementedError

    def item_text(self) -> pd.DataFrame | None:
        """Columns ``domain``, ``item``, ``text``; None when the source has no item text."""
        return None

    def describe(self) -> dict:
        """JSON-able identity of the data (used in cache keys and run records)."""
        return {"source": type(self).__name__}


class AmazonP5(DataSource):
    """Amazon 2014 5-core stores in the P5 format (``<Domain>_user_sequence.txt.gz``).

    Args:
        root: folder with the files; default: the ``CROSSREC_DATA`` environment variable, else
            ``../shared/data/amazon_p5`` next to the repository.
        domains: store names, e.g. ``["Beauty", "Toys"]``.
    """

    def __init__(self, domains: Sequence[str] | str = ("Toys",), root: str | None = None):
        self.domains = [domains] if isinstance(domains, str) else list(domains)
        self.root = root

    def _root(self):
        from crossrec_lit.data.sources import resolve_data_root

        return resolve_data_root(self.root)

    def load(self) -> InteractionTable:
        from crossrec_lit.data.sources import load_amazon_p5

        return load_amazon_p5(self._root(), self.domains)

    def item_text(self) -> pd.DataFrame:
        from crossrec_lit.data.sources import load_amazon_p5_text

        return load_amazon_p5_text(self._root(), self.domains)

    def describe(self) -> dict:
        root = self._root()
        files = {d: _file_identity(root / f"{d}_user_sequence.txt.gz") for d in self.domains}
        return {"source": "AmazonP5", "domains": self.domains, "files": files}


class Synthetic(DataSource):
    """The embedded two-store generator (the offline default); arguments as in
    :func:`crossrec_lit.data.sources.make_synthetic_stores`."""

    def __init__(
        self,
        n_users: int = 2000,
        n_items: tuple[int, int] = (600, 500),
        domains: tuple[str, str] = ("A", "B"),
        overlap: float = 0.5,
        dim: int = 8,
        domain_shift: float | str = 0.2,
        interactions_per_user: tuple[int, int] = (12, 8),
        text_signal: float = 1.0,
        popularity_skew: float = 1.0,
        seed: int = 0,
        ratings: bool = False,
    ):
        self.params = dict(
            n_users=n_users,
            n_items=tuple(n_items),
            domains=tuple(domains),
            overlap=overlap,
            dim=dim,
            domain_shift=domain_shift,
            interactions_per_user=tuple(interactions_per_user),
            text_signal=text_signal,
            popularity_skew=popularity_skew,
            seed=seed,
        )
        if ratings:  # only when asked: the identity (and cache keys) of star-less stores stay as they were
            self.params["ratings"] = True
        self._stores = None

    @property
    def stores(self):
        """The generated stores (with their true factors), built on first use."""
        if self._stores is None:
            from crossrec_lit.data.sources import make_synthetic_stores

            self._stores = make_synthetic_stores(**self.params)
        return self._stores

    def load(self) -> InteractionTable:
        return self.stores.table

    def item_text(self) -> pd.DataFrame:
        return self.stores.item_text

    def describe(self) -> dict:
        return {"source": "Synthetic", "params": {k: list(v) if isinstance(v, tuple) else v for k, v in self.params.items()}}


class InteractionFile(DataSource):
    """A CSV/TSV/Parquet file of interactions with a column mapping (your own data)."""

    def __init__(
        self,
        path: str,
        user_col: str = "user",
        item_col: str = "item",
        rating_col: str | None = None,
        timestamp_col: str | None = None,
        domain: str | None = None,
        domain_col: str | None = None,
        sep: str | None = None,
        text_path: str | None = None,
        position_col: str | None = None,
    ):
        self.path = path
        self.kwargs = dict(user_col=user_col, item_col=item_col, rating_col=rating_col, timestamp_col=timestamp_col, domain=domain, domain_col=domain_col, sep=sep)
        if position_col is not None:  # only when given: older cache keys stay valid
            self.kwargs["position_col"] = position_col
        self.text_path = text_path

    def load(self) -> InteractionTable:
        from crossrec_lit.data.sources import load_interactions

        return load_interactions(self.path, **self.kwargs)

    def item_text(self) -> pd.DataFrame | None:
        """Optional item text file with columns domain, item, text (CSV)."""
        if self.text_path is None:
            return None
        if not os.path.exists(self.text_path):
            raise CrossRecError(f"item text file {self.text_path} does not exist", "fix text_path or leave it out")
        frame = pd.read_csv(self.text_path, dtype=str, keep_default_na=False)
        missing = [c for c in ("domain", "item", "text") if c not in frame.columns]
        if missing:
            raise CrossRecError(f"item text file {self.text_path} lacks column(s) {missing}", "provide columns domain, item, text")
        return frame[["domain", "item", "text"]]

    def describe(self) -> dict:
        return {"source": "InteractionFile", "file": _file_identity(self.path), **self.kwargs}


class AmazonReviews(DataSource):
    """Raw Amazon review JSON lines (2014, 2018 or 2023 field names), optionally with metadata titles."""

    def __init__(self, path: str, domain: str, meta_path: str | None = None, min_rating: float | None = None):
        self.path, self.domain, self.meta_path, self.min_rating = path, domain, meta_path, min_rating

    def load(self) -> InteractionTable:
        from crossrec_lit.data.sources import load_amazon_reviews

        return load_amazon_reviews(self.path, self.domain, min_rating=self.min_rating)

    def item_text(self) -> pd.DataFrame | None:
        if self.meta_path is None:
            return None
        from crossrec_lit.data.sources import load_amazon_metadata_titles

        titles = load_amazon_metadata_titles(self.meta_path)
        return titles.assign(domain=self.domain)[["domain", "item", "text"]]

    def describe(self) -> dict:
        return {"source": "AmazonReviews", "file": _file_identity(self.path), "domain": self.domain, "min_rating": self.min_rating}


class Stores(DataSource):
    """Several sources read as one data set: typically each store's own export file.

    ``Stores([InteractionFile("a.csv", domain="A"), InteractionFile("b.csv", domain="B")])``, or in
    a config ``source: {class_path: crossrec_lit.data.Stores, init_args: {sources: [...]}}``. Each
    source brings its own stores (domains); a store may come from one source only, and the sources
    must agree on the optional columns (ratings, timestamps, a given split), which a model reads for
    every store alike.
    """

    def __init__(self, sources: Sequence[DataSource]):
        sources = list(sources) if isinstance(sources, (list, tuple)) else sources
        if not isinstance(sources, list) or not sources or not all(isinstance(s, DataSource) for s in sources):
            raise CrossRecError(
                f"Stores needs a non-empty list of data sources, got {sources!r}",
                "pass e.g. [InteractionFile('a.csv', domain='A'), InteractionFile('b.csv', domain='B')]",
            )
        self.sources = sources

    def load(self) -> InteractionTable:
        tables = [source.load() for source in self.sources]
        seen: dict[str, int] = {}
        for number, table in enumerate(tables, 1):
            for domain in table.domains:
                if domain in seen:
                    raise CrossRecError(
                        f"store {domain!r} comes from both source #{seen[domain]} and source #{number} of Stores",
                        "give each source its own store name (InteractionFile's domain=...), or merge the files first",
                    )
                seen[domain] = number
        optional = [{c for c in ("rating", "timestamp", "split") if c in t.frame.columns} for t in tables]
        if any(cols != optional[0] for cols in optional):
            described = "; ".join(f"source #{n} ({', '.join(t.domains)}): {sorted(cols) or 'none'}" for n, (t, cols) in enumerate(zip(tables, optional), 1))
            raise CrossRecError(
                f"the sources of Stores differ in their optional columns ({described})",
                "give every file the same columns (rating_col, timestamp_col), or leave the column out of all of them",
            )
        return InteractionTable.concat(tables)

    def item_text(self) -> pd.DataFrame | None:
        texts = [t for t in (source.item_text() for source in self.sources) if t is not None]
        return pd.concat(texts, ignore_index=True) if texts else None

    def describe(self) -> dict:
        return {"source": "Stores", "sources": [source.describe() for source in self.sources]}


class TableSource(DataSource):
    """An in-memory :class:`InteractionTable` (for Python users who built their own)."""

    def __init__(self, table: InteractionTable, text: pd.DataFrame | None = None):
        if not isinstance(table, InteractionTable):
            raise CrossRecError(f"TableSource needs an InteractionTable, got {type(table).__name__}", "build one with InteractionTable.from_frame")
        self.table, self.text = table, text

    def load(self) -> InteractionTable:
        return self.table

    def item_text(self) -> pd.DataFrame | None:
        return self.text

    def describe(self) -> dict:
        f = self.table.frame
        digest = pd.util.hash_pandas_object(f, index=False).sum()
        return {"source": "TableSource", "rows": len(f), "hash": int(digest) & 0xFFFFFFFFFFFF}


def _file_identity(path) -> dict:
    """Name, size and sha256 of the content. Not the mtime: copying, unpacking or re-mounting
    the same files gives them new times, and a cache key holding one would retrain every cached
    trial (hours of CPU for the real-data chapters) although not a byte changed."""
    try:
        st = os.stat(path)
    except OSError:
        return {"path": str(path), "missing": True}
    return {"name": os.path.basename(str(path)), "size": st.st_size, "sha256": content_digest(path)}
