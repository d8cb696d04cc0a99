"""Recording a chapter's (or an experiment's) key numbers, so tests can check them.

Every book chapter ends with ``record({...}, record_path)``. In the book ``record_path`` is
``None`` and nothing is written; the chapter tests run the chapter with papermill, pass a path, and
compare the JSON file with what the chapter claims. This replaces scrapbook (unmaintained) with a
plain, atomic JSON write.

The regression record (``tests/baselines/<chapter>.json``) holds those numbers over several blocks
of seeds; :func:`block_verdicts`, :func:`seed_dependent` and :func:`verdict_spread` read a paired
test back from it, so a chapter can say which of its verdicts the seeds decide rather than state
one side.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path

from crossrec_lit.errors import CrossRecError

__all__ = ["data_banner", "glue_number", "glue_text", "in_words", "quiet_notebook", "record", "to_jsonable"]


def record(results: Mapping, path: str | os.PathLike | None) -> dict:
    """Write ``results`` as JSON to ``path`` atomically; do nothing (but validate) when ``path`` is None.

    Values may be numbers (Python, numpy or one-element torch tensors), strings, booleans, None,
    and lists or string-keyed dicts of those. Numpy/torch floating scalars become ``float``,
    integer scalars ``int``. NaN and infinite values are refused with a :class:`CrossRecError`
    naming the key, since a chapter that records NaN has a bug the test must see.

    The file is written to a temporary file in the same folder and moved into place with
    ``os.replace``, so a reader never sees half a file. Missing parent folders are created.

    Returns the cleaned dictionary (what was, or would have been, written).
    """
    if not isinstance(results, Mapping):
        raise CrossRecError(f"record() needs a dict of results, got {type(results).__name__}", "pass e.g. {'ndcg@10': 0.05}")
    clean = to_jsonable(results)
    if path is None:
        return clean
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(clean, fh, indent=2, sort_keys=True, allow_nan=False)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a record is meant to be read by others
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return clean


def to_jsonable(value, _where: str = "results"):
    """A JSON-safe copy of ``value`` (see :func:`record` for what is accepted)."""
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise CrossRecError(f"key {key!r} in {_where} is not a string", "use string keys such as 'mf_ndcg@10'")
            out[key] = to_jsonable(item, f"{_where}[{key!r}]")
        return out
    if isinstance(value, (list, tuple)):
        return [to_jsonable(item, f"{_where}[{i}]") for i, item in enumerate(value)]
    if value is None or isinstance(value, (str, bool)):
        return value
    value = _unwrap_scalar(value, _where)
    if isinstance(value, (list, bool)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        number = float(value)
        if not math.isfinite(number):
            raise CrossRecError(f"{_where} is {number}", "record only finite numbers; a NaN or infinite metric points to a bug upstream")
        return number
    raise CrossRecError(
        f"{_where} has type {type(value).__name__}, which cannot be recorded",
        "record numbers, strings, booleans, None, or lists/dicts of them",
    )


def _unwrap_scalar(value, where: str):
    """Python scalar from a numpy scalar/0-d array or a one-element torch tensor; other values unchanged."""
    module = type(value).__module__.split(".")[0]
    if module == "torch":
        if getattr(value, "numel", lambda: 0)() != 1:
            raise CrossRecError(f"{where} is a tensor of shape {tuple(value.shape)}", "record a scalar, e.g. tensor.mean().item(), or tensor.tolist()")
        return value.item()
    if module == "numpy":
        if getattr(value, "ndim", 0) == 0:
            return value.item()
        return to_jsonable(value.tolist(), where)
    return value


def data_banner(source_description: str) -> str:
    """One line that says which data the numbers below come from (chapters ``print`` it).

    Every number in the book depends on the data; the banner keeps a reader from mistaking the
    synthetic stores for Amazon, and tells them how to switch.
    """
    text = str(source_description).strip()
    if not text:
        raise CrossRecError("data_banner needs a description of the data", "pass e.g. 'synthetic stores, Synthetic(n_users=2000, seed=0)'")
    return f"Data: {text}. Every number on this page is computed from this data when the page is built."


def glue_number(name: str, value) -> None:
    """Make a number available to a chapter's prose as ``{glue:text}`name:.3f```: glued as a plain
    ``float`` (numpy and torch scalars included), so any format spec applies. Not displayed."""
    from myst_nb import glue  # imported here: the package must not need the book's stack

    glue(name, float(_unwrap_scalar(value, name)), display=False)


def glue_text(name: str, text) -> None:
    """Make a string available to a chapter's prose as ``{glue:text}`name```. Not displayed."""
    from myst_nb import glue

    glue(name, str(text), display=False)


def in_words(names) -> str:
    """``['a', 'b', 'c']`` -> ``'a, b and c'`` (lists of models in prose); ``'none'`` when empty."""
    names = [str(n) for n in names]
    if not names:
        return "none"
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def quiet_notebook() -> None:
    """What every chapter calls first: silence the warnings nobody can act on
    (:data:`crossrec_lit.runtime.KNOWN_NOISE`, and tqdm's notice that ipywidgets is missing) and
    Lightning's INFO banners, so a page shows the chapter's output and real warnings only.

    Call it before importing Lightning yourself, or after: it imports Lightning here, once the
    filters are set (the tqdm notice is raised at import time), and only then lowers Lightning's
    loggers (its import sets them to INFO)."""
    import warnings

    from crossrec_lit.runtime import filter_known_warnings, quiet_lightning_logs

    warnings.filterwarnings("ignore", message=r"IProgress not found")
    filter_known_warnings()
    import pytorch_lightning  # noqa: F401  (see above: after the filters, before the log levels)

    quiet_lightning_logs()


def block_verdicts(metrics: Mapping, test: str, metric: str | None = None) -> list[str] | None:
    """The verdict of one recorded paired test in each block of seeds of a regression record.

    ``metrics`` is the ``"metrics"`` mapping of ``tests/baselines/<chapter>.json`` (what
    ``tests/regress.py update`` writes: for every recorded number its ``values``, one per block of
    seeds); ``test`` names the test's entry in the chapter's record, e.g.
    ``"paired.CoNet.Overlap popularity"``, under which ``ci_low``, ``ci_high`` and ``p_holm`` were
    recorded. Each block's verdict is :func:`~crossrec_lit.evaluation.stats.verdict` of those three,
    so the record and the chapter use one rule. ``metric`` says which way is better (an error such
    as ``rmse`` is better when smaller); by default it is read from the parts of ``test``. Returns
    None when the record lacks the test (no record yet, or other stores than the recorded ones).
    """
    from crossrec_lit.evaluation.stats import lower_is_better, verdict

    blocks = [metrics.get(f"{test}.{part}", {}).get("values") for part in ("ci_low", "ci_high", "p_holm")]
    if not all(blocks) or len({len(b) for b in blocks}) != 1:
        return None
    if metric is None:
        parts = [p for p in re.split(r"[.|]", test) if p]
        metric = next((p for p in parts if lower_is_better(p)), "")
    return [verdict(lo, hi, p, metric) for lo, hi, p in zip(*blocks)]


def seed_dependent(metrics: Mapping, tests: Mapping[str, str], metric: str | None = None) -> dict[str, list[str]]:
    """Of ``tests`` (a label for prose -> the test's name in the record, see :func:`block_verdicts`),
    those whose verdict differs between the regression record's blocks of seeds, with the verdict of
    each block. A chapter says of these that the seeds decide them, not the stores. Tests the
    record lacks are left out."""
    out = {}
    for label, test in tests.items():
        verdicts = block_verdicts(metrics, test, metric)
        if verdicts is not None and len(set(verdicts)) > 1:
            out[label] = verdicts
    return out


def regression_metrics(path: str | os.PathLike) -> dict:
    """The ``"metrics"`` of a regression record (``tests/baselines/<chapter>.json``); an empty dict
    when the file does not exist, so a chapter run on other stores simply finds no record."""
    path = Path(path)
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("metrics", {})
    except json.JSONDecodeError as error:
        raise CrossRecError(f"{path} is not a regression record: {error}",
                            "restore it from git (`git checkout -- tests/baselines`) or re-record it with `make regress-update`") from error


def verdict_spread(metrics: Mapping, tests: Mapping[str, str], metric: str | None = None, block: str = "") -> str:
    """One sentence for a chapter's prose: whether the verdicts of ``tests`` (a label -> the test's
    name in the record, see :func:`block_verdicts`) are the same in every block of seeds of the
    regression record ``metrics``, naming those that are not with each block's verdict. ``block``
    describes a block for the reader (e.g. ``"five seeds with a search of its own"``)."""
    blocks = {label: v for label, v in ((label, block_verdicts(metrics, name, metric)) for label, name in tests.items()) if v is not None}
    if not blocks:
        return "There is no regression record for these stores, so this page cannot say whether these verdicts hold for other seeds."
    n_blocks = len(next(iter(blocks.values())))
    what = f" (each block {block})" if block else ""
    moving = {label: v for label, v in blocks.items() if len(set(v)) > 1}
    if not moving:
        subject = "This verdict is" if len(blocks) == 1 else f"Each of these {len(blocks)} verdicts is"
        return f"{subject} the same in all {n_blocks} blocks of seeds of the chapter's regression record{what}."
    if len(blocks) == 1:
        return (f"Over the {n_blocks} blocks of seeds of the chapter's regression record{what}, this verdict changes with the seeds "
                f"({', '.join(next(iter(moving.values())))}), so these stores do not settle it.")
    one = len(moving) == 1
    return (f"Over the {n_blocks} blocks of seeds of the chapter's regression record{what}, {len(moving)} of these {len(blocks)} verdicts "
            + ("changes with the seeds, so these stores do not settle it: " if one else "change with the seeds, so these stores do not settle them: ")
            + in_words(f"{label} ({', '.join(v)})" for label, v in moving.items())
            + ". The others are the same in every block.")
