"""Cleaning steps between loading and splitting: duplicates, implicit thresholds, k-core, overlap.

Each function takes and returns an :class:`InteractionTable`, so they compose in any order the
data needs. Positions are renumbered after every filter so that "last interaction" stays
well-defined for leave-one-out splits.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from crossrec_lit.data.interactions import InteractionTable
from crossrec_lit.errors import CrossRecError

DEDUPE_POLICIES = ("first", "last", "none", "error")


def deduplicate(table: InteractionTable, policy: str = "first") -> InteractionTable:
    """Handle repeated (domain, user, item) rows.

    ``first`` keeps the earliest interaction (by position), ``last`` the latest, ``none`` keeps
    repeats (sequence data where re-purchases matter), ``error`` refuses them. Top-K evaluation
    needs a set of items per user, so the DataModules default to ``first``.
    """
    if policy not in DEDUPE_POLICIES:
        raise CrossRecError(f"unknown dedupe policy {policy!r}", f"use one of {list(DEDUPE_POLICIES)}")
    if policy == "none":
        return table
    frame = table.frame.sort_values(["domain", "user", "position"], kind="stable")
    dup = frame.duplicated(["domain", "user", "item"], keep="first" if policy != "last" else "last")
    if not dup.any():
        return table
    if policy == "error":
        example = frame.loc[dup, ["domain", "user", "item"]].head(3).to_dict("records")
        raise CrossRecError(
            f"{int(dup.sum())} duplicate (domain, user, item) rows, e.g. {example}",
            "pass dedupe='first' or 'last' to keep one of each, or 'none' to keep repeats",
        )
    return _renumber(frame.loc[~dup])


def implicit_threshold(table: InteractionTable, threshold: float) -> InteractionTable:
    """Keep rated interactions with ``rating >= threshold`` as positive implicit feedback."""
    if not table.has_ratings:
        raise CrossRecError("implicit_threshold needs ratings but the data has none", "drop the threshold or load a rating column")
    frame = table.frame[table.frame["rating"] >= threshold]
    if frame.empty:
        raise CrossRecError(f"no interaction has rating >= {threshold}", "lower the implicit threshold")
    return _renumber(frame)


def k_core(table: InteractionTable, k_user: int = 5, k_item: int = 5) -> InteractionTable:
    """Iteratively drop users and items with fewer than ``k`` interactions, per domain.

    Counted per domain because a store's density is a property of that store: a user with 20
    purchases in Beauty and 1 in Toys is not a Toys regular.
    """
    if k_user < 0 or k_item < 0:
        raise CrossRecError(f"k-core thresholds must be >= 0, got k_user={k_user}, k_item={k_item}", "use 0 to disable")
    frame = table.frame
    if k_user <= 1 and k_item <= 1:
        return table
    while True:
        n_before = len(frame)
        if k_item > 1:
            item_counts = frame.groupby(["domain", "item"], observed=True)["user"].transform("size")
            frame = frame[item_counts.to_numpy() >= k_item]
        if k_user > 1:
            user_counts = frame.groupby(["domain", "user"], observed=True)["item"].transform("size")
            frame = frame[user_counts.to_numpy() >= k_user]
        if len(frame) == n_before:
            break
    emptied = [d for d in table.domains if d not in set(frame["domain"].unique())]
    if emptied:
        raise CrossRecError(
            f"k-core filtering (k_user={k_user}, k_item={k_item}) left domain(s) {emptied} empty",
            "lower k_user/k_item or check that the domain has enough repeat users",
        )
    return _renumber(frame)


@dataclass(frozen=True)
class OverlapReport:
    """How many users two domains share: the quantity every cross-domain model depends on."""

    source: str
    target: str
    source_users: int
    target_users: int
    overlap_users: int

    @property
    def share_of_target(self) -> float:
        return self.overlap_users / self.target_users if self.target_users else 0.0

    @property
    def share_of_source(self) -> float:
        return self.overlap_users / self.source_users if self.source_users else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "share_of_target": self.share_of_target, "share_of_source": self.share_of_source}

    def __str__(self) -> str:
        return (
            f"{self.source} -> {self.target}: {self.overlap_users:,} shared users "
            f"({self.share_of_source:.1%} of {self.source_users:,} source users, "
            f"{self.share_of_target:.1%} of {self.target_users:,} target users)"
        )


def overlap_report(table: InteractionTable, source: str, target: str) -> OverlapReport:
    """Count the users present in both domains."""
    if source == target:
        raise CrossRecError(f"source and target are the same domain {source!r}", "pick two different domains")
    table.require_domains([source, target])
    su = set(table.frame.loc[table.frame["domain"] == source, "user"].unique())
    tu = set(table.frame.loc[table.frame["domain"] == target, "user"].unique())
    return OverlapReport(source, target, len(su), len(tu), len(su & tu))


def require_overlap(report: OverlapReport, *, minimum: int = 1, needed_by: str = "this model") -> None:
    """Stop early, and say why, when a model that learns from shared users gets (almost) none.

    Silent zero overlap (for example from swapped user/item columns in one file) is the most
    common way cross-domain experiments waste days; the error says what to check.
    """
    if report.overlap_users < minimum:
        raise CrossRecError(
            f"{needed_by} needs users shared by {report.source!r} and {report.target!r} but found "
            f"{report.overlap_users} (at least {minimum} required)",
            "check that both files use the same user ids in the user column (swapped user/item columns give zero overlap), "
            "or use a model that needs no shared users (e.g. the text model)",
        )


def _renumber(frame: pd.DataFrame) -> InteractionTable:
    """Contiguous positions after filtering, keeping each user's order."""
    frame = frame.sort_values(["domain", "user", "position"], kind="stable").copy()
    frame["position"] = frame.groupby(["domain", "user"], sort=False).cumcount().to_numpy(dtype=np.int64)
    return InteractionTable(frame.reset_index(drop=True), copy=False)
