"""The one validated in-memory form of interaction data, and the id <-> index mappings.

Every loader produces an :class:`InteractionTable`; everything downstream (preprocessing, splits,
DataModules) consumes one. Columns are canonical so no later stage has to guess names:

=============  ==========  ======================================================================
column         dtype       meaning
=============  ==========  ======================================================================
``user``       string      user id as given by the source (never parsed as a number)
``item``       string      item id as given by the source (ASINs can have leading zeros)
``domain``     string      the store / category the interaction belongs to
``position``   int64       order of the interaction within the user's history in that domain
``rating``     float64     optional explicit rating
``timestamp``  int64       optional Unix time
=============  ==========  ======================================================================
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from crossrec_lit.errors import CrossRecError

REQUIRED_COLUMNS = ("user", "item", "domain")
OPTIONAL_COLUMNS = ("position", "rating", "timestamp", "split")
SPLIT_VALUES = ("train", "valid", "test")


class InteractionTable:
    """Validated interactions of one or more domains.

    Build one with :meth:`from_frame` (which maps your column names) or from a frame that already
    has the canonical columns. The table is immutable in spirit: methods return new tables.
    """

    def __init__(self, frame: pd.DataFrame, *, copy: bool = True):
        self.frame = _validate(frame.copy() if copy else frame)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_frame(
        cls,
        frame: pd.DataFrame,
        *,
        user_col: str = "user",
        item_col: str = "item",
        rating_col: str | None = None,
        timestamp_col: str | None = None,
        position_col: str | None = None,
        domain: str | None = None,
        domain_col: str | None = None,
    ) -> InteractionTable:
        """Map a user's frame onto the canonical columns.

        Exactly one of ``domain`` (a constant) or ``domain_col`` must say which store each row
        belongs to; with neither, every row goes to domain ``"default"``.
        """
        if not isinstance(frame, pd.DataFrame):
            raise CrossRecError(f"expected a pandas DataFrame, got {type(frame).__name__}", "pass pandas.DataFrame data")
        wanted = {"user": user_col, "item": item_col}
        for canonical, given in (("rating", rating_col), ("timestamp", timestamp_col), ("position", position_col)):
            if given is not None:
                wanted[canonical] = given
        if domain_col is not None:
            if domain is not None:
                raise CrossRecError("both domain and domain_col were given", "pass only one of them")
            wanted["domain"] = domain_col
        missing = [given for given in wanted.values() if given not in frame.columns]
        if missing:
            raise CrossRecError(
                f"missing column(s) {missing}; the data has {list(frame.columns)}",
                "name the right columns with user_col/item_col/rating_col/timestamp_col/domain_col",
            )
        out = pd.DataFrame({canonical: frame[given].to_numpy() for canonical, given in wanted.items()})
        if "domain" not in out.columns:
            out["domain"] = domain if domain is not None else "default"
        return cls(out, copy=False)

    @classmethod
    def concat(cls, tables: Iterable[InteractionTable]) -> InteractionTable:
        frames = [t.frame for t in tables]
        if not frames:
            raise CrossRecError("no tables to concatenate", "pass at least one InteractionTable")
        return cls(pd.concat(frames, ignore_index=True), copy=False)

    # ------------------------------------------------------------------ views
    def __len__(self) -> int:
        return len(self.frame)

    def __repr__(self) -> str:
        parts = [f"{d}: {n:,}" for d, n in self.frame.groupby("domain", observed=True).size().items()]
        return f"InteractionTable({len(self):,} interactions; {', '.join(parts)})"

    @property
    def domains(self) -> list[str]:
        return sorted(self.frame["domain"].unique().tolist())

    @property
    def has_ratings(self) -> bool:
        return "rating" in self.frame.columns

    @property
    def has_timestamps(self) -> bool:
        return "timestamp" in self.frame.columns

    @property
    def has_split(self) -> bool:
        return "split" in self.frame.columns

    def domain(self, name: str) -> InteractionTable:
        """The interactions of one domain (error naming the known domains when absent)."""
        self.require_domains([name])
        return InteractionTable(self.frame[self.frame["domain"] == name].reset_index(drop=True), copy=False)

    def select_domains(self, names: Sequence[str]) -> InteractionTable:
        self.require_domains(names)
        return InteractionTable(self.frame[self.frame["domain"].isin(list(names))].reset_index(drop=True), copy=False)

    def require_domains(self, names: Sequence[str]) -> None:
        known = self.domains
        unknown = [n for n in names if n not in known]
        if unknown:
            raise CrossRecError(f"unknown domain(s) {unknown}; the data has {known}", f"use one of {known}")

    def users(self, domain: str | None = None) -> np.ndarray:
        frame = self.frame if domain is None else self.domain(domain).frame
        return np.sort(frame["user"].unique())

    def items(self, domain: str | None = None) -> np.ndarray:
        frame = self.frame if domain is None else self.domain(domain).frame
        return np.sort(frame["item"].unique())

    def split_part(self, part: str) -> InteractionTable:
        """Rows of one split part (``train``/``valid``/``test``) of a split table."""
        if not self.has_split:
            raise CrossRecError("this table has not been split", "call a function from crossrec_lit.data.split first")
        if part not in SPLIT_VALUES:
            raise CrossRecError(f"unknown split part {part!r}", f"use one of {list(SPLIT_VALUES)}")
        return InteractionTable(self.frame[self.frame["split"] == part].reset_index(drop=True), copy=False)

    def summary(self) -> pd.DataFrame:
        """Users, items, interactions and density per domain."""
        g = self.frame.groupby("domain", observed=True)
        out = pd.DataFrame(
            {
                "users": g["user"].nunique(),
                "items": g["item"].nunique(),
                "interactions": g.size(),
            }
        )
        out["density"] = out["interactions"] / (out["users"] * out["items"])
        return out

    def with_frame(self, frame: pd.DataFrame) -> InteractionTable:
        return InteractionTable(frame, copy=False)


class Vocab:
    """A frozen mapping between string ids and contiguous integer indices.

    Indices follow the sorted order of the ids, so the same set of ids always gets the same
    indices, whatever order the rows came in.
    """

    def __init__(self, ids: Iterable[str]):
        values = np.asarray(sorted(set(map(str, ids))), dtype=object)
        self.ids = values
        self._index = pd.Index(values)

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return f"Vocab({len(self):,} ids)"

    def __contains__(self, key: str) -> bool:
        return key in self._index

    def encode(self, ids, *, what: str = "id") -> np.ndarray:
        """Indices of ``ids``; an unknown id is an error that names it."""
        arr = np.asarray(ids, dtype=object).reshape(-1)
        idx = self._index.get_indexer(arr)
        if (idx < 0).any():
            unknown = pd.unique(arr[idx < 0])[:5].tolist()
            raise CrossRecError(
                f"{int((idx < 0).sum())} unknown {what}(s), e.g. {unknown}",
                f"use {what}s that appear in the training data (see the vocabulary's .ids)",
            )
        return idx.astype(np.int64)

    def decode(self, indices) -> np.ndarray:
        indices = np.asarray(indices, dtype=np.int64)
        if indices.size and (indices.min() < 0 or indices.max() >= len(self)):
            raise CrossRecError(f"index out of range for a vocabulary of {len(self)}", "pass indices in [0, len(vocab))")
        return self.ids[indices]

    def to_list(self) -> list[str]:
        return self.ids.tolist()


# ---------------------------------------------------------------------- validation
def _validate(frame: pd.DataFrame) -> pd.DataFrame:
    if not isinstance(frame, pd.DataFrame):
        raise CrossRecError(f"expected a pandas DataFrame, got {type(frame).__name__}", "pass a pandas.DataFrame")
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise CrossRecError(
            f"missing column(s) {missing}; the data has {list(frame.columns)}",
            "build the table with InteractionTable.from_frame(..., user_col=..., item_col=..., domain=...)",
        )
    extra = [c for c in frame.columns if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    if extra:
        raise CrossRecError(
            f"unexpected column(s) {extra}",
            f"keep only {list(REQUIRED_COLUMNS + OPTIONAL_COLUMNS)} (map yours with InteractionTable.from_frame)",
        )
    if len(frame) == 0:
        raise CrossRecError("the interaction data is empty", "check the file or the filters that produced it")

    for col in ("user", "item", "domain"):
        series = frame[col]
        if series.isna().any():
            raise CrossRecError(f"{int(series.isna().sum())} missing value(s) in column {col!r}", f"drop or fill rows without a {col}")
        # Ids stay strings: parsing '0123' as a number would silently merge or mangle ids.
        frame[col] = series.astype(str).astype(object)
        if (frame[col] == "").any():
            raise CrossRecError(f"empty string(s) in column {col!r}", f"drop rows whose {col} is empty")

    if "rating" in frame.columns:
        frame["rating"] = _numeric(frame["rating"], "rating").astype(np.float64)
        if not np.isfinite(frame["rating"].to_numpy()).all():
            raise CrossRecError("ratings contain NaN or infinite values", "drop or impute those rows before building the table")
    if "timestamp" in frame.columns:
        ts = _timestamps(frame["timestamp"])
        if ts.isna().any() or not np.isfinite(ts.to_numpy(dtype=np.float64)).all():
            raise CrossRecError("timestamps contain missing or infinite values", "drop those rows or leave out timestamp_col")
        frame["timestamp"] = ts.astype(np.int64)
    if "position" in frame.columns:
        pos = _numeric(frame["position"], "position")
        if pos.isna().any():
            raise CrossRecError("positions contain missing values", "drop those rows or leave out position_col")
        frame["position"] = pos.astype(np.int64)
    else:
        frame["position"] = _positions(frame)
    if "split" in frame.columns:
        bad = ~frame["split"].isin(SPLIT_VALUES)
        if bad.any():
            raise CrossRecError(
                f"split column has values other than {list(SPLIT_VALUES)}: {frame.loc[bad, 'split'].unique()[:5].tolist()}",
                "use train/valid/test",
            )
        frame["split"] = frame["split"].astype(str).astype(object)
    order = [c for c in REQUIRED_COLUMNS + OPTIONAL_COLUMNS if c in frame.columns]
    return frame[order].reset_index(drop=True)


def _numeric(series: pd.Series, name: str) -> pd.Series:
    try:
        return pd.to_numeric(series, errors="raise")
    except (TypeError, ValueError):
        bad = series[pd.to_numeric(series, errors="coerce").isna() & series.notna()].head(3).tolist()
        raise CrossRecError(f"column {name!r} is not numeric (e.g. {bad})", f"convert {name} to numbers or drop those rows") from None


def _timestamps(series: pd.Series) -> pd.Series:
    """Times as numbers (as given: Unix seconds, or any increasing count), else dates.

    Shop exports often write dates (``2020-01-31``, ``2020-01-31T12:00:00+02:00``); those become
    Unix seconds (UTC). Only ISO 8601 is read as a date: ``01/02/2020`` is January or February
    depending on the country, and a guess would reorder customers' histories without a word.
    """
    if pd.api.types.is_datetime64_any_dtype(series):
        return _unix_seconds(series.dt.tz_localize("UTC") if series.dt.tz is None else series.dt.tz_convert("UTC"))
    numbers = pd.to_numeric(series, errors="coerce")
    given = series.notna()
    if not (numbers.isna() & given).any():
        return numbers
    try:
        dates = pd.to_datetime(series, utc=True, format="ISO8601")
    except (TypeError, ValueError):
        bad = series[numbers.isna() & given].head(3).tolist()
        raise CrossRecError(
            f"column 'timestamp' holds neither numbers nor ISO 8601 dates throughout (e.g. {bad})",
            "write times as Unix seconds or as ISO 8601 dates (2020-01-31, 2020-01-31T12:00:00), the same form in every row, or drop those rows",
        ) from None
    return _unix_seconds(dates)


def _unix_seconds(dates: pd.Series) -> pd.Series:
    """UTC datetimes as whole Unix seconds, on the same index."""
    return pd.Series((dates - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1), index=dates.index)


def _positions(frame: pd.DataFrame) -> np.ndarray:
    """Order within (domain, user): by timestamp where given, else by row order (stable)."""
    keys = frame[["domain", "user"]].copy()
    keys["_row"] = np.arange(len(frame))
    sort_cols = ["domain", "user"] + (["timestamp"] if "timestamp" in frame.columns else []) + ["_row"]
    if "timestamp" in frame.columns:
        keys["timestamp"] = frame["timestamp"].to_numpy()
    ordered = keys.sort_values(sort_cols, kind="stable")
    pos = ordered.groupby(["domain", "user"], sort=False).cumcount().to_numpy()
    out = np.empty(len(frame), dtype=np.int64)
    out[ordered["_row"].to_numpy()] = pos
    return out
