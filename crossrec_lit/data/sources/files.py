"""Interactions from the user's own tabular files: CSV, TSV (optionally compressed) and Parquet.

Id columns are read as text, never numbers: a user ``007`` and an item ``0123456789`` must survive
the round trip, and a value such as ``NA`` or ``null`` is a legitimate id, not a missing value.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import lzma
from pathlib import Path

import numpy as np
import pandas as pd

from crossrec_lit.data.interactions import InteractionTable
from crossrec_lit.errors import CrossRecError

_SEPARATORS = {".csv": ",", ".tsv": "\t", ".txt": None}  # None: sniff the file
_PARQUET_SUFFIXES = {".parquet", ".pq"}
_COMPRESSION_SUFFIXES = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
# Tokens that mean "missing" in numeric columns only; id columns keep every string as written.
_NUMERIC_NA = ["", "NA", "N/A", "NaN", "nan", "null", "NULL", "None"]


def load_interactions(
    path: str | Path,
    *,
    user_col: str,
    item_col: str,
    rating_col: str | None = None,
    timestamp_col: str | None = None,
    domain: str | None = None,
    domain_col: str | None = None,
    sep: str | None = None,
    position_col: str | None = None,
    **read_kwargs,
) -> InteractionTable:
    """Read a CSV/TSV/Parquet file of interactions into an :class:`InteractionTable`.

    The format follows the extension: ``.csv`` (comma), ``.tsv`` (tab), ``.txt`` (separator sniffed
    from the first lines), each optionally compressed (``.gz``, ``.bz2``, ``.xz``), or ``.parquet``/
    ``.pq`` (needs pyarrow). ``sep`` overrides the separator of a text file. ``domain`` names the one
    store all rows belong to, or ``domain_col`` the column that says it per row. ``timestamp_col``
    (a time) or ``position_col`` (0, 1, 2, ... within a customer's history) gives the order that the
    leave-one-out split follows. Extra keyword arguments go to :func:`pandas.read_csv` or
    :func:`pandas.read_parquet`.
    """
    path = require_file(path, "interaction file")
    kind, default_sep = _file_kind(path)
    wanted = [c for c in (user_col, item_col, rating_col, timestamp_col, position_col, domain_col) if c is not None]
    id_cols = [c for c in (user_col, item_col, domain_col) if c is not None]
    if kind == "parquet":
        frame = _read_parquet(path, wanted, id_cols, read_kwargs)
    else:
        frame = _read_delimited(path, wanted, id_cols, sep if sep is not None else default_sep, read_kwargs)
    if len(frame) == 0:
        raise CrossRecError(f"{path} has column names but no rows", "check the file (was it written completely?)")
    return table_from_frame(
        frame,
        path,
        user_col=user_col,
        item_col=item_col,
        rating_col=rating_col,
        timestamp_col=timestamp_col,
        position_col=position_col,
        domain=domain,
        domain_col=domain_col,
    )


def write_interactions(table: InteractionTable, path: str | Path) -> Path:
    """Write a table as the CSV that :func:`load_interactions` reads back (columns ``user``, ``item``,
    ``domain`` and whichever of ``position``, ``timestamp``, ``rating`` the table has), all or nothing:
    the file appears only once complete. A ``.gz``/``.bz2``/``.xz`` suffix compresses it."""
    from crossrec_lit.atomic import atomic_write

    if not isinstance(table, InteractionTable):
        raise CrossRecError(f"write_interactions needs an InteractionTable, got {type(table).__name__}", "pass source.load() or InteractionTable.from_frame(...)")
    path = Path(path).expanduser()
    kind, sep = _file_kind(path)
    if kind != "text" or sep != ",":
        raise CrossRecError(f"write_interactions writes CSV, not {path.name}", "name the file *.csv (or *.csv.gz)")
    columns = ["user", "item", "domain"] + [c for c in ("position", "timestamp", "rating") if c in table.frame.columns]
    frame = table.frame[columns]
    opener = _COMPRESSION_SUFFIXES.get(path.suffix.lower())

    def write(tmp: str) -> None:
        if opener is gzip.open:
            # no name and no time in the gzip header (pandas would write the temporary file's name):
            # the same table gives the same bytes, so a checksum of the export can be quoted
            with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as packed:
                packed.write(frame.to_csv(index=False).encode("utf-8"))
        elif opener is not None:
            with opener(tmp, "wt", encoding="utf-8", newline="") as handle:
                frame.to_csv(handle, index=False)
        else:
            frame.to_csv(tmp, index=False)

    return atomic_write(path, write)


def require_file(path: str | Path, what: str = "file") -> Path:
    """``path`` as a :class:`Path`, or a CrossRecError when it is not an existing, non-empty file."""
    if path is None:
        raise CrossRecError(f"no path given for the {what}", "pass the path of the file to read")
    path = Path(path).expanduser()
    if not path.exists():
        raise CrossRecError(f"{what} {path} does not exist", "check the path (relative paths start at the working directory)")
    if not path.is_file():
        raise CrossRecError(f"{what} {path} is not a file", "pass the path of a file, not a folder")
    if path.stat().st_size == 0:
        raise CrossRecError(f"{what} {path} is empty (0 bytes)", "copy or download the file again")
    return path


def table_from_frame(frame: pd.DataFrame, source: str | Path, **mapping) -> InteractionTable:
    """:meth:`InteractionTable.from_frame`, with any validation error prefixed by the file it came from."""
    try:
        return InteractionTable.from_frame(frame, **mapping)
    except CrossRecError as exc:
        raise CrossRecError(f"{source}: {exc.problem}", exc.fix) from None


# ---------------------------------------------------------------------- formats
def _file_kind(path: Path) -> tuple[str, str | None]:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in _PARQUET_SUFFIXES:
        return "parquet", None
    if suffixes and suffixes[-1] in _COMPRESSION_SUFFIXES:
        suffixes = suffixes[:-1]
    if suffixes and suffixes[-1] in _SEPARATORS:
        return "text", _SEPARATORS[suffixes[-1]]
    known = sorted(_SEPARATORS) + sorted(_PARQUET_SUFFIXES)
    raise CrossRecError(
        f"cannot tell the format of {path.name} from its extension",
        f"rename it to one of {known} (text files may add .gz/.bz2/.xz)",
    )


def _read_delimited(path: Path, wanted: list[str], id_cols: list[str], sep: str | None, read_kwargs: dict) -> pd.DataFrame:
    if sep is None:
        sep = _sniff_separator(path)
    kwargs = dict(read_kwargs)
    kwargs["sep"] = sep
    try:
        header = pd.read_csv(path, **{**kwargs, "nrows": 0}).columns
    except pd.errors.EmptyDataError:
        raise CrossRecError(f"{path} has no data (not even a header line)", "check the file") from None
    _require_columns(path, wanted, header, sep)
    kwargs["usecols"] = wanted
    kwargs["dtype"] = {**kwargs.get("dtype", {}), **{c: str for c in id_cols}}
    if "na_values" not in kwargs and "keep_default_na" not in kwargs:
        kwargs["keep_default_na"] = False
        kwargs["na_values"] = {c: _NUMERIC_NA for c in wanted if c not in id_cols}
    try:
        return pd.read_csv(path, **kwargs)
    except (pd.errors.ParserError, UnicodeDecodeError, EOFError, OSError) as exc:
        problem = f"{path} could not be parsed ({type(exc).__name__}: {exc})".replace("\n", " ")
        raise CrossRecError(problem, "check the separator (sep=) and the file's integrity") from None


def _sniff_separator(path: Path) -> str:
    opener = _COMPRESSION_SUFFIXES.get(path.suffix.lower(), open)
    with opener(path, "rt", encoding="utf-8", errors="replace") as handle:
        sample = "".join(handle.readline() for _ in range(20))
    try:
        found = csv.Sniffer().sniff(sample, delimiters=",\t;| ").delimiter
    except csv.Error:
        raise CrossRecError(f"could not tell the column separator of {path}", "pass sep=',' (or the separator the file uses)") from None
    # Space-separated files often align columns with several spaces; treat any run as one separator.
    return r"\s+" if found == " " else found


def _read_parquet(path: Path, wanted: list[str], id_cols: list[str], read_kwargs: dict) -> pd.DataFrame:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise CrossRecError(
            "reading Parquet files needs pyarrow, which is not installed", "pip install pyarrow (or crossrec_lit[parquet])"
        ) from None
    try:
        header = pq.read_schema(path).names
    except Exception as exc:  # pyarrow raises its own ArrowInvalid/OSError types for broken files
        problem = f"{path} is not a readable Parquet file ({exc})".replace("\n", " ")
        raise CrossRecError(problem, "write the file again or check its extension") from None
    _require_columns(path, wanted, header)
    frame = pd.read_parquet(path, columns=wanted, **read_kwargs)
    for col in id_cols:
        frame[col] = _ids_as_text(frame[col])
    return frame


def _ids_as_text(series: pd.Series) -> pd.Series:
    # A Parquet writer that met a missing value stores integer ids as floats; 123.0 must read "123".
    if pd.api.types.is_float_dtype(series) and series.notna().all():
        values = series.to_numpy()
        if np.isfinite(values).all() and (values == np.round(values)).all():
            return series.astype(np.int64).astype(str)
    return series


def _require_columns(path: Path, wanted: list[str], header, sep: str | None = None) -> None:
    header = [str(c) for c in header]
    missing = [c for c in wanted if c not in header]
    if not missing:
        return
    # one column whose name holds the wanted ones joined by another character: the separator is
    # wrong (a .csv written with ';' by a spreadsheet set to a language with decimal commas)
    other = next((c for c in (";", "\t", "|", ",") if c != sep and len(header) == 1 and all(w in header[0].split(c) for w in missing)), None)
    if other is not None:
        raise CrossRecError(
            f"{path} has no column(s) {missing} when split at {sep!r}; its header {header[0]!r} splits at {other!r}",
            f"pass sep={other!r} (InteractionFile(..., sep={other!r}), or sep: {other!r} under init_args in a config)",
        )
    raise CrossRecError(
        f"{path} has no column(s) {missing}; its columns are {header}",
        "name the right columns with user_col/item_col/rating_col/timestamp_col/domain_col",
    )
