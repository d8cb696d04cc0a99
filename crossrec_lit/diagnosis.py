"""Say before training whether cross-store transfer can work on this data.

A transfer model can only carry over what the data holds: customers shared by the two stores, with
enough purchases in each, whose source purchases say something about their target purchases.
Three counting baselines measure the last point in seconds, with no training:

* global popularity of the target store (no personalisation, no transfer);
* overlap popularity (:class:`~crossrec_lit.models.OverlapPopularity`: what shared customers buy);
* cross-store co-occurrence (:class:`~crossrec_lit.models.CrossDomainCooccurrence`: "bought source
  item i, also bought target item j"), the simplest PERSONAL transfer.

When co-occurrence clearly beats popularity on the validation users, the cross-store signal is
there and a transfer model has something to learn; when it does not, popularity and overlap
popularity will be hard to beat and a table of transfer models is likely to show ties or losses.

Everything is read from training parts (counts, models) and the target's validation part (the
users scored); the test part is never read, so looking at the diagnosis cannot leak into the test.
Scoring is the package's evaluation: full ranking of the target catalogue with the user's training
items masked (:func:`crossrec_lit.evaluation.evaluate` over
:class:`~crossrec_lit.data.sampling.EvalBatches`), as in validation during training.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import stats

from crossrec_lit.data.sampling import EvalBatches
from crossrec_lit.errors import CrossRecError
from crossrec_lit.evaluation import evaluate

# the stated rule of the interpretation: a lift of at least 10% over popularity that a paired
# Wilcoxon test on the validation users supports (p < 0.05) counts as a cross-store signal
SIGNAL_LIFT = 1.10
SIGNAL_ALPHA = 0.05

VERDICTS = ("signal", "weak", "none", "no_shared_users", "not_measured", "not_applicable")


def diagnose_transfer(datamodule, k: int = 10) -> dict:
    """Shared customers, their activity, and the co-occurrence signal's lift over popularity.

    Args:
        datamodule: a :class:`~crossrec_lit.data.CrossDomainDataModule` (set up on first use), or
            an :class:`~crossrec_lit.data.InteractionDataModule` (one store: only the single-store
            figures are given and ``applies`` is False).
        k: cut-off of NDCG@k.

    Returns a dict (plain Python values; ``nan`` where a figure is undefined):

    * ``applies`` (bool: a cross-store diagnosis applies), ``verdict`` (one of :data:`VERDICTS`),
      ``interpretation`` (one sentence), ``rule`` (the rule behind the verdict);
    * ``source``, ``target`` (store names; ``source`` None for one store), ``split``, ``k``;
    * ``source_train_users``, ``target_train_users``: customers with training interactions;
    * ``shared_users``: customers with training interactions in both stores;
      ``shared_share_of_target``: their share of ``target_train_users``;
    * ``shared_source_interactions_median`` / ``_mean`` and ``shared_target_interactions_median``
      / ``_mean``: training interactions per shared customer in each store;
    * ``valid_users``: users of the target's validation part; ``valid_users_with_source``: those
      with source training interactions (the only ones co-occurrence can personalise for: it
      falls back to overlap popularity for the others);
    * on all validation users: ``ndcg_popularity``, ``ndcg_overlap_popularity``,
      ``ndcg_cooccurrence`` (NDCG@k), ``lift_vs_popularity`` and ``lift_vs_overlap_popularity``
      (co-occurrence NDCG divided by each; ``inf`` where only co-occurrence finds items) and
      ``p_vs_popularity`` (two-sided Wilcoxon signed-rank p of the per-user differences
      co-occurrence minus popularity, ties dropped as in the summary's paired tests);
    * the same six figures on the validation users with source purchases, suffixed
      ``_with_source`` (equal to the above under cold start, where every validation user is a
      shared customer). The verdict is taken on these: it asks whether the signal is there where
      transfer can act; the interpretation adds how much of the validation set that is.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise CrossRecError(f"k must be a positive integer, got {k!r}", "use e.g. k=10")
    k = int(k)
    if not hasattr(datamodule, "index") or not hasattr(datamodule, "target_domain"):
        raise CrossRecError(
            f"diagnose_transfer needs a crossrec_lit DataModule, got {type(datamodule).__name__}",
            "pass a CrossDomainDataModule (or an InteractionDataModule for one store)",
        )
    idx = datamodule.index
    target = datamodule.target_domain
    source = getattr(datamodule, "source_domain", None)
    nan = float("nan")
    diag = {
        "applies": False,
        "verdict": "not_applicable",
        "interpretation": "",
        "rule": _rule_text(),
        "source": source,
        "target": target,
        "split": getattr(datamodule, "split", None),
        "k": k,
        "source_train_users": 0,
        "target_train_users": 0,
        "shared_users": 0,
        "shared_share_of_target": nan,
        "shared_source_interactions_median": nan,
        "shared_source_interactions_mean": nan,
        "shared_target_interactions_median": nan,
        "shared_target_interactions_mean": nan,
        "valid_users": 0,
        "valid_users_with_source": 0,
    }
    for suffix in ("", "_with_source"):
        diag.update({f"{key}{suffix}": nan for key in _COMPARISON_KEYS})
    target_counts = _interactions_per_user(idx, target, idx.num_users)
    target_users = np.flatnonzero(target_counts)
    valid_users = idx.users_with(target, "valid")
    diag["target_train_users"] = int(len(target_users))
    diag["valid_users"] = int(len(valid_users))
    popularity = _popularity(datamodule, idx, target, k) if len(valid_users) else None
    if popularity is not None:
        diag["ndcg_popularity"] = _mean(popularity)

    if source is None:
        diag["interpretation"] = f"One store ({target}): no cross-store diagnosis applies."
        return diag
    if datamodule.eval_domain != target:
        diag["interpretation"] = (
            f"This DataModule evaluates the source store {source} (source pretraining): no cross-store diagnosis applies; "
            "diagnose the DataModule that evaluates the target store."
        )
        return diag

    diag["applies"] = True
    source_counts = _interactions_per_user(idx, source, idx.num_users)
    shared = np.flatnonzero((source_counts > 0) & (target_counts > 0))
    diag["source_train_users"] = int((source_counts > 0).sum())
    diag["shared_users"] = int(len(shared))
    diag["shared_share_of_target"] = len(shared) / len(target_users) if len(target_users) else nan
    if len(shared):
        for name, counts in (("source", source_counts), ("target", target_counts)):
            diag[f"shared_{name}_interactions_median"] = float(np.median(counts[shared]))
            diag[f"shared_{name}_interactions_mean"] = float(np.mean(counts[shared]))
    with_source = source_counts[valid_users] > 0
    diag["valid_users_with_source"] = int(with_source.sum())

    if not len(shared):
        diag["verdict"] = "no_shared_users"
        diag["interpretation"] = (
            f"No customer has training purchases in both {source} and {target}: nothing can be transferred through shared customers "
            "(only item content, such as text, could carry knowledge across); expect popularity to be hard to beat."
        )
        return diag
    if not len(valid_users):
        diag["verdict"] = "not_measured"
        diag["interpretation"] = f"{target} has no validation users in this split, so the co-occurrence signal was not measured (the test part is never used for this)."
        return diag

    from crossrec_lit.models import CrossDomainCooccurrence, OverlapPopularity

    overlap = _scored(OverlapPopularity(**datamodule.model_arguments_for(OverlapPopularity), ks=(k,)), datamodule, idx, target, k)
    cooc = _scored(CrossDomainCooccurrence(**datamodule.model_arguments_for(CrossDomainCooccurrence), ks=(k,)), datamodule, idx, target, k)
    diag.update(_compare(popularity, overlap, cooc, ""))
    diag.update(_compare(popularity[with_source], overlap[with_source], cooc[with_source], "_with_source"))
    diag["verdict"], diag["interpretation"] = _verdict(diag)
    return diag


def diagnosis_markdown(diag: dict, heading_level: int = 2) -> str:
    """A short markdown block for the summary: heading "Data diagnosis", a bullet list and one
    sentence of interpretation with its rule (from :func:`diagnose_transfer`'s dict)."""
    h = "#" * max(1, int(heading_level))
    source, target = diag.get("source"), diag.get("target")
    stores = f"{source} -> {target}" if source else f"{target} (one store)"
    k = diag.get("k", 10)
    lines = [f"{h} Data diagnosis", "", f"{stores}, split {diag.get('split')}; training data and the validation users of {target} only (the test part is not read).", ""]
    if not diag.get("applies"):
        lines.append(f"- {target} training customers: {diag['target_train_users']:,}; validation users: {diag['valid_users']:,}")
        if not _isnan(diag.get("ndcg_popularity")):
            lines.append(f"- NDCG@{k} of global popularity on the validation users: {diag['ndcg_popularity']:.4f}")
        return "\n".join(lines + ["", diag["interpretation"], ""])
    lines.append(
        f"- shared customers (training purchases in both stores): {diag['shared_users']:,} "
        f"({_pct(diag['shared_share_of_target'])} of {diag['target_train_users']:,} {target} training customers)"
    )
    if diag["shared_users"]:
        lines.append(
            f"- training interactions per shared customer, median / mean: {source} {_num(diag['shared_source_interactions_median'])} / "
            f"{diag['shared_source_interactions_mean']:.1f}, {target} {_num(diag['shared_target_interactions_median'])} / "
            f"{diag['shared_target_interactions_mean']:.1f}"
        )
    lines.append(f"- validation users ({target} 'valid' part): {diag['valid_users']:,}, of whom {diag['valid_users_with_source']:,} have {source} training purchases")
    if not _isnan(diag.get("ndcg_cooccurrence")):
        lines.append(f"- NDCG@{k} on the validation users (full ranking, training items masked): {_comparison_text(diag, '')}")
        if diag["valid_users_with_source"] < diag["valid_users"] and not _isnan(diag.get("ndcg_cooccurrence_with_source")):
            lines.append(f"- the same on the {diag['valid_users_with_source']:,} validation users with {source} purchases: {_comparison_text(diag, '_with_source')}")
    elif not _isnan(diag.get("ndcg_popularity")):
        lines.append(f"- NDCG@{k} of global popularity on the validation users: {diag['ndcg_popularity']:.4f}")
    lines += ["", diag["interpretation"]]
    if diag["verdict"] in ("signal", "weak", "none"):
        lines += ["", f"Rule: {diag['rule']}"]
    return "\n".join(lines + [""])


# ---------------------------------------------------------------------- helpers
def _interactions_per_user(idx, domain: str, num_users: int) -> np.ndarray:
    """Training interactions of every user in ``domain`` (repeats counted, as they were bought)."""
    return np.bincount(idx.arrays(domain, "train")["users"], minlength=num_users)


def _eval_loader(datamodule, idx, target: str) -> EvalBatches:
    """The validation batches exactly as :meth:`InteractionDataModule.eval_batches` builds them
    for ``valid`` on the target store: truth = validation items, training items masked."""
    return EvalBatches(idx.users_with(target, "valid"), idx.matrix(target, "valid"), idx.matrix(target, ("train",)), batch_size=datamodule.eval_batch_size)


def _ndcg_per_user(model, datamodule, idx, target: str, k: int) -> np.ndarray:
    """NDCG@k of every validation user, in user-index order (so models line up for paired tests)."""
    _, per_user = evaluate(model, _eval_loader(datamodule, idx, target), ks=(k,), keep_per_user=True)
    values = per_user[f"ndcg@{k}"].to_numpy(np.float64)
    # every validation user has a validation item, so none is dropped and rows match users_with()
    expected = len(idx.users_with(target, "valid"))
    if len(values) != expected:
        raise CrossRecError(f"the evaluation scored {len(values)} of {expected} validation users", "report this as a bug in crossrec_lit.diagnosis")
    return values


def _scored(model, datamodule, idx, target: str, k: int) -> np.ndarray:
    """Per-validation-user NDCG@k of a counting model bound to the data (no Trainer needed)."""
    model.bind_data(datamodule)
    return _ndcg_per_user(model, datamodule, idx, target, k)


def _popularity(datamodule, idx, target: str, k: int) -> np.ndarray:
    """Global popularity of the target store: the count of each item in the target training part,
    what :class:`~crossrec_lit.models.Popularity` counts in its first epoch (set here directly,
    since Popularity counts from training batches and there is no Trainer)."""
    from crossrec_lit.models import Popularity

    model = Popularity(idx.num_users, idx.num_items(target), ks=(k,))
    model.counts.copy_(torch.from_numpy(idx.item_counts(target, "train").astype(np.float64)))
    return _ndcg_per_user(model, datamodule, idx, target, k)


def _verdict(diag: dict) -> tuple[str, str]:
    """The verdict on the validation users with source purchases (where transfer can act), with
    a clause on the whole validation set where that is only part of it."""
    source, n_with, n_all = diag["source"], diag["valid_users_with_source"], diag["valid_users"]
    if not n_with:
        return "not_measured", (
            f"No validation user has {source} training purchases, so co-occurrence personalises for no one here "
            "and the cross-store signal cannot be measured on validation."
        )
    lift, p = diag["lift_vs_popularity_with_source"], diag["p_vs_popularity_with_source"]
    if _isnan(lift):
        return "not_measured", (
            "Neither popularity nor co-occurrence finds any validation item (e.g. new items without training data), "
            "so the lift is undefined and this diagnosis says nothing about transfer here."
        )
    where = f"for the {n_with:,} validation users with {source} purchases" if n_with < n_all else "on validation"
    gain = "any amount (popularity finds none of their items)" if math.isinf(lift) else f"{abs(lift - 1.0):.0%}"
    if lift >= SIGNAL_LIFT and p < SIGNAL_ALPHA:
        verdict, text = "signal", f"Co-occurrence beats popularity {where} by {gain} (Wilcoxon p {_pval(p)}): the cross-store signal is there"
        lift_ov = diag["lift_vs_overlap_popularity_with_source"]
        if not _isnan(lift_ov) and lift_ov <= 1.0:
            text += ", though no more than what shared customers buy (overlap popularity does as well)"
    elif lift >= SIGNAL_LIFT:
        verdict, text = "weak", (
            f"Co-occurrence beats popularity {where} by {gain}, but too few users establish it (Wilcoxon p {_pval(p)}): "
            "the cross-store signal is uncertain, so expect popularity or overlap popularity to be hard to beat"
        )
    elif lift > 1.0:
        verdict, text = "weak", (
            f"Co-occurrence beats popularity {where} by only {gain} (Wilcoxon p {_pval(p)}): "
            "the cross-store signal is weak, so expect popularity or overlap popularity to be hard to beat"
        )
    else:
        verdict, text = "none", (
            f"No lift: co-occurrence {'ties with popularity' if lift == 1.0 else f'trails popularity by {gain}'} {where}, "
            "so expect popularity or overlap popularity to be hard to beat"
        )
    if verdict != "none" and n_with < n_all:
        lift_all = diag["lift_vs_popularity"]
        share = f"{n_with / n_all:.0%}"
        if not _isnan(lift_all) and lift_all <= 1.0:
            text += (
                f"; but they are {share} of the validation users, and over all of them co-occurrence (which falls back on overlap popularity "
                f"for the others) reaches x{_num(lift_all, 2)} popularity, so a table over all users shows transfer only where a model also serves the others well"
            )
        else:
            text += f"; they are {share} of the validation users, so gains over all users will be diluted"
    return verdict, text + "."


def _rule_text() -> str:
    return (
        f"on the validation users with source purchases (all of them under cold start), co-occurrence NDCG at least {SIGNAL_LIFT:.2f} x "
        f"popularity's with Wilcoxon p < {SIGNAL_ALPHA} = signal; above 1 x otherwise = weak; 1 x or below = no lift."
    )


_COMPARISON_KEYS = (
    "ndcg_popularity",
    "ndcg_overlap_popularity",
    "ndcg_cooccurrence",
    "lift_vs_popularity",
    "lift_vs_overlap_popularity",
    "p_vs_popularity",
)


def _compare(popularity: np.ndarray, overlap: np.ndarray, cooc: np.ndarray, suffix: str) -> dict:
    """Mean NDCGs, co-occurrence's lifts and its paired Wilcoxon p against popularity."""
    out = {
        f"ndcg_popularity{suffix}": _mean(popularity),
        f"ndcg_overlap_popularity{suffix}": _mean(overlap),
        f"ndcg_cooccurrence{suffix}": _mean(cooc),
    }
    out[f"lift_vs_popularity{suffix}"] = _ratio(out[f"ndcg_cooccurrence{suffix}"], out[f"ndcg_popularity{suffix}"])
    out[f"lift_vs_overlap_popularity{suffix}"] = _ratio(out[f"ndcg_cooccurrence{suffix}"], out[f"ndcg_overlap_popularity{suffix}"])
    diff = cooc - popularity
    nonzero = diff[diff != 0]
    # the same test as the summary's paired tests: users where both score the same are dropped
    out[f"p_vs_popularity{suffix}"] = float(stats.wilcoxon(nonzero).pvalue) if len(nonzero) else float("nan")
    return out


def _comparison_text(diag: dict, suffix: str) -> str:
    return (
        f"popularity {diag['ndcg_popularity' + suffix]:.4f}, overlap popularity {diag['ndcg_overlap_popularity' + suffix]:.4f}, "
        f"co-occurrence {diag['ndcg_cooccurrence' + suffix]:.4f} (x{_num(diag['lift_vs_popularity' + suffix], 2)} vs popularity, "
        f"Wilcoxon p {_pval(diag['p_vs_popularity' + suffix])}; x{_num(diag['lift_vs_overlap_popularity' + suffix], 2)} vs overlap popularity)"
    )


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if len(values) else float("nan")


def _ratio(a: float, b: float) -> float:
    if _isnan(a) or _isnan(b):
        return float("nan")
    if b == 0:
        # 0/0: neither finds anything, no lift to speak of; a/0: only the numerator finds items
        return float("inf") if a > 0 else float("nan")
    return a / b


def _isnan(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _num(x: float, digits: int = 1) -> str:
    if _isnan(x):
        return "n/a"
    if math.isinf(x):
        return "inf"
    return f"{x:.0f}" if float(x).is_integer() and digits == 1 else f"{x:.{digits}f}"


def _pct(x: float) -> str:
    return "n/a" if _isnan(x) else f"{x:.1%}"


def _pval(p: float) -> str:
    return "n/a" if _isnan(p) else (f"{p:.1e}" if p < 1e-3 else f"{p:.3f}")


__all__ = ["SIGNAL_ALPHA", "SIGNAL_LIFT", "VERDICTS", "diagnose_transfer", "diagnosis_markdown"]
