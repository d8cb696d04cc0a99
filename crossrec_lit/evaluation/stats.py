"""Aggregation over seeds and paired significance tests against baselines.

Three views of "is model A better than baseline B", each answering a different doubt:

* Wilcoxon signed-rank on per-user differences pooled over seeds/folds: is the difference
  consistent across users? (Pairs are the same user in the same seed; users where both models
  score the same are dropped, the usual ``zero_method="wilcox"``.)
* paired t-test on per-seed means: does it hold across training randomness and folds?
* bootstrap confidence interval of the mean per-user difference: how large is it?

scipy's implementations are used; a p-value is ``nan`` where the test is undefined (fewer than
two seeds, or no non-zero difference).

Multiple comparisons: a table of ten models against a baseline runs ten tests per metric, and at
p < 0.05 one of them "wins" by chance about two times in five. :func:`paired_tests` therefore also
reports Holm-adjusted p-values (:func:`holm_adjust`), and the summary's marks use them. The family
of one correction is every model compared with the SAME baseline on the SAME metric within one
call (in the summary: one protocol's table).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from crossrec_lit.errors import CrossRecError


def aggregate(results: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """Mean, std and number of seeds per model and metric@k of one split."""
    sub = results[results["split"] == split].copy()
    sub["name"] = sub["metric"] + sub["k"].map(lambda k: "" if pd.isna(k) else f"@{int(k)}")
    g = sub.groupby(["model", "name"], sort=False)["value"]
    return pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=1).fillna(0.0), "n": g.size()}).reset_index()


def paired_test(per_user: pd.DataFrame, model: str, baseline: str, metric: str, *, n_boot: int = 2000, seed: int = 0) -> dict:
    """Compare ``model`` with ``baseline`` on ``metric`` (a per-user column such as ``ndcg@10``)."""
    if metric not in per_user.columns:
        raise CrossRecError(f"metric {metric!r} is not among the per-user columns", f"use one of {[c for c in per_user.columns if c not in ('model', 'seed', 'user')]}")
    a = per_user[per_user["model"] == model][["seed", "user", metric]]
    b = per_user[per_user["model"] == baseline][["seed", "user", metric]]
    pairs = a.merge(b, on=["seed", "user"], suffixes=("_a", "_b"))
    if pairs.empty:
        raise CrossRecError(f"{model!r} and {baseline!r} share no (seed, user) pairs", "compare models evaluated on the same split")
    diff = (pairs[f"{metric}_a"] - pairs[f"{metric}_b"]).to_numpy()
    out = {"model": model, "baseline": baseline, "metric": metric, "n_users": len(diff), "mean_diff": float(diff.mean())}
    nonzero = diff[diff != 0]
    out["p_wilcoxon"] = float(stats.wilcoxon(nonzero).pvalue) if len(nonzero) >= 1 else float("nan")
    seed_means = pairs.groupby("seed")[[f"{metric}_a", f"{metric}_b"]].mean()
    if len(seed_means) >= 2 and (seed_means.iloc[:, 0] - seed_means.iloc[:, 1]).std() > 0:
        out["p_ttest_seeds"] = float(stats.ttest_rel(seed_means.iloc[:, 0], seed_means.iloc[:, 1]).pvalue)
    else:
        out["p_ttest_seeds"] = float("nan")
    rng = np.random.default_rng(seed)
    boots = diff[rng.integers(0, len(diff), size=(n_boot, len(diff)))].mean(1)
    out["ci_low"], out["ci_high"] = (float(x) for x in np.quantile(boots, [0.025, 0.975]))
    return out


def holm_adjust(pvalues) -> np.ndarray:
    """Holm's step-down adjusted p-values (Holm, Scand. J. Statist. 1979), in the input order.

    With the m defined p-values sorted, p_(1) <= ... <= p_(m), the adjusted value of p_(i) is
    ``min(1, max_{j <= i} (m - j + 1) * p_(j))``: rejecting where the adjusted p < alpha controls
    the family-wise error rate at alpha under any dependence between the tests (tests of several
    models against one baseline on the same users are far from independent). It is uniformly
    more powerful than Bonferroni. ``nan`` stays ``nan`` and does not count in m: an undefined
    test (no non-zero difference, one seed) was never run, so it cannot cause a false discovery.
    """
    # written here because no installed dependency offers Holm: scipy (1.17) has only the
    # Benjamini-Hochberg/Yekutieli FDR control (stats.false_discovery_control), and statsmodels'
    # multipletests is not a dependency of this package
    p = np.asarray(pvalues, dtype=np.float64)
    if p.ndim != 1:
        raise CrossRecError(f"holm_adjust takes a 1-d sequence of p-values, got shape {p.shape}", "pass one family of p-values at a time")
    defined = ~np.isnan(p)
    if ((p[defined] < 0) | (p[defined] > 1)).any():
        raise CrossRecError(f"p-values must lie in [0, 1], got {p[defined & ((p < 0) | (p > 1))].tolist()}", "pass p-values, not statistics")
    out = np.full_like(p, np.nan)
    q = p[defined]
    m = len(q)
    if m == 0:
        return out
    order = np.argsort(q, kind="stable")
    stepped = np.maximum.accumulate((m - np.arange(m)) * q[order])
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(stepped, 1.0)
    out[defined] = adjusted
    return out


def paired_tests(per_user: pd.DataFrame, baselines: Sequence[str], metrics: Sequence[str]) -> pd.DataFrame:
    """Every model against every named baseline on every metric, with Holm-adjusted p-values.

    Besides the columns of :func:`paired_test` (raw ``p_wilcoxon`` and ``p_ttest_seeds``), each
    row has ``p_holm`` (the Wilcoxon p) and ``p_holm_ttest`` (the t-test p) adjusted by
    :func:`holm_adjust`, ``holm_m``, the size of the row's Wilcoxon family, and ``verdict``
    (:func:`verdict`: ``better``, ``worse`` or ``no significant difference``). A family is all
    the models compared with the same baseline on the same metric in this call (so pass one
    protocol's per-user values at a time, as the summary does); undefined (``nan``) p-values stay
    ``nan`` and are not counted.
    """
    rows = []
    models = list(dict.fromkeys(per_user["model"]))
    for baseline in baselines:
        for model in models:
            if model == baseline:
                continue
            for metric in metrics:
                rows.append(paired_test(per_user, model, baseline, metric))
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    out["p_holm"] = np.nan
    out["p_holm_ttest"] = np.nan
    out["holm_m"] = 0
    for _, family in out.groupby(["baseline", "metric"], sort=False):
        out.loc[family.index, "p_holm"] = holm_adjust(family["p_wilcoxon"].to_numpy())
        out.loc[family.index, "p_holm_ttest"] = holm_adjust(family["p_ttest_seeds"].to_numpy())
        out.loc[family.index, "holm_m"] = int(family["p_wilcoxon"].notna().sum())
    out["verdict"] = [verdict(r.ci_low, r.ci_high, r.p_holm, r.metric) for r in out.itertuples()]
    return out


def verdict_agreement(first: pd.DataFrame, second: pd.DataFrame) -> pd.DataFrame:
    """The verdicts of two :func:`paired_tests` tables side by side, e.g. of the same experiment on
    two blocks of seeds (``run_experiment(..., first_seed=...)``): one row per (model, baseline,
    metric) in both, with ``verdict_first``, ``verdict_second`` and ``agree``. A verdict that
    changes between blocks of seeds belongs to the seeds (the folds, the search, the training),
    not to the stores, and should not be reported as the stores' answer."""
    keys = ["model", "baseline", "metric"]
    for name, table in (("first", first), ("second", second)):
        missing = {*keys, "verdict"} - set(table.columns)
        if missing:
            raise CrossRecError(f"the {name} table lacks columns {sorted(missing)}", "pass tables returned by paired_tests")
    both = first[[*keys, "verdict", "mean_diff"]].merge(second[[*keys, "verdict", "mean_diff"]], on=keys, suffixes=("_first", "_second"))
    both["agree"] = both["verdict_first"] == both["verdict_second"]
    return both


def verdict(ci_low: float, ci_high: float, p_holm: float, metric: str = "", alpha: float = 0.05) -> str:
    """``better`` when the adjusted p is below ``alpha`` and the difference's interval lies on the
    good side of zero (above it for scores, below it for errors, see :func:`lower_is_better`),
    ``worse`` in the mirror case, else ``no significant difference``."""
    if not (np.isfinite(p_holm) and p_holm < alpha):
        return "no significant difference"
    sign = -1.0 if lower_is_better(metric) else 1.0
    low, high = sorted((sign * ci_low, sign * ci_high))
    if low > 0:
        return "better"
    if high < 0:
        return "worse"
    return "no significant difference"


# errors, where a smaller value is the better one; every other reported metric is a score
LOWER_IS_BETTER = frozenset({"mae", "rmse"})


def lower_is_better(metric: str) -> bool:
    """True for error metrics (``mae``, ``rmse``, ``...loss``): "better" then means a smaller value."""
    name = metric.partition("@")[0]
    return name in LOWER_IS_BETTER or name.endswith("loss")


def summary_markdown(
    results: pd.DataFrame,
    per_user: pd.DataFrame | None,
    *,
    title: str,
    metrics: Sequence[str] = ("ndcg@10", "recall@10"),
    baselines: Sequence[str] = (),
    alpha: float = 0.05,
) -> str:
    """The human-readable result tables, one per protocol: mean +/- std over seeds, marks of
    significant improvement (``^N``) or loss (``vN``) against each baseline, and the paired tests
    behind them.

    A mark needs the Holm-adjusted Wilcoxon p below ``alpha``; the family of one correction is
    every model of the protocol's table compared with the same baseline on the same metric (see
    :func:`paired_tests`). The tests table shows raw and adjusted p-values.

    In each protocol the *strongest* baseline (the named baseline with the best mean on the
    first metric) is singled out, since beating a weak baseline proves little: a sentence under each
    table names the models better than it, worse than it and not told apart from it. For error metrics
    (:func:`lower_is_better`) better means smaller: the marks and the strongest baseline follow.
    """
    seeds = sorted(results["seed"].unique().tolist())
    lines = [f"# {title}", "", f"Test split, mean +/- std over {len(seeds)} seed(s) {seeds}.", ""]
    for protocol, group in results.groupby("protocol", sort=False):
        lines += _protocol_section(protocol, group, per_user, metrics, baselines, alpha)
    return "\n".join(lines) + "\n"


def _protocol_section(protocol, results, per_user, metrics, baselines, alpha) -> list[str]:
    agg = aggregate(results, "test")
    models = list(dict.fromkeys(agg["model"]))
    present = [b for b in baselines if b in models]
    pu = per_user[per_user["model"].isin(models)] if per_user is not None and len(per_user) else None
    tests = paired_tests(pu, present, metrics) if present and pu is not None else pd.DataFrame()
    strongest = None
    if present:
        first = agg[agg["name"] == metrics[0]].set_index("model")["mean"]
        sign = -1.0 if lower_is_better(metrics[0]) else 1.0
        strongest = max(present, key=lambda b: sign * first[b] if b in first.index else float("-inf"))
    fit = results[results["split"] == "fit"].groupby(["model", "metric"])["value"].mean()
    lines = [f"## {protocol}", ""]
    extra = f" {metrics[0]} vs {strongest}: diff (p Holm) |" if strongest else ""
    searched = "search_trials" in set(fit.index.get_level_values("metric"))
    search_head = " search: trials (pruned) |" if searched else ""
    lines += ["| model | " + " | ".join(metrics) + " | best epoch | fit s |" + search_head + extra, "|" + "---|" * (len(metrics) + 3 + searched + bool(strongest))]
    for model in models:
        cells = []
        for m in metrics:
            row = agg[(agg["model"] == model) & (agg["name"] == m)]
            cell = "n/a" if row.empty else f"{row['mean'].iloc[0]:.4f} +/- {row['std'].iloc[0]:.4f}"
            if not tests.empty:
                # Holm-adjusted p: with many models in a table the raw p-values overstate wins
                sig = tests[(tests["model"] == model) & (tests["metric"] == m) & (tests["p_holm"] < alpha)]
                gain = -sig["mean_diff"] if lower_is_better(m) else sig["mean_diff"]
                cell += "".join(f" ^{present.index(b) + 1}" for b in sig.loc[gain > 0, "baseline"])
                cell += "".join(f" v{present.index(b) + 1}" for b in sig.loc[gain < 0, "baseline"])
            cells.append(cell)
        line = f"| {model} | " + " | ".join(cells) + f" | {fit.get((model, 'best_epoch'), float('nan')):.0f} | {fit.get((model, 'fit_seconds'), float('nan')):.1f} |"
        if searched:  # the tuning seed's study: trials trained to the end, and those stopped early
            n = fit.get((model, "search_trials"))
            line += " - |" if n is None or pd.isna(n) else f" {n + fit.get((model, 'search_pruned'), 0):.0f} ({fit.get((model, 'search_pruned'), 0):.0f}) |"
        if strongest:
            t = tests[(tests["model"] == model) & (tests["baseline"] == strongest) & (tests["metric"] == metrics[0])] if not tests.empty else tests
            line += f" {t['mean_diff'].iloc[0]:+.4f} ({_p(t['p_holm'].iloc[0])}) |" if len(t) else " - |"
        lines.append(line)
    if strongest and not tests.empty:
        lines += ["", _against_strongest(agg, tests, strongest, metrics[0], alpha)]
    if not tests.empty:
        errors = [m for m in metrics if lower_is_better(m)]
        lines += [
            "",
            f"^N: significantly better, vN: significantly worse than baseline N (two-sided Wilcoxon signed-rank on per-user values "
            f"pooled over seeds, Holm-adjusted p < {alpha}{'; lower is better for ' + ', '.join(errors) if errors else ''}): "
            + ", ".join(f"{i + 1} = {b}" for i, b in enumerate(present))
            + f". Strongest baseline on {metrics[0]}: {strongest}.",
            "",
            f"Paired tests are Holm-corrected over the {_family_size(tests)} models compared with each baseline on each metric "
            "(one family per baseline and metric in this table; a test whose p is undefined is not counted).",
            "",
            "| model | baseline | metric | users | mean diff | 95% CI | p Wilcoxon | p Wilcoxon (Holm) | p t-test (seeds) | p t-test (Holm) |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in tests.itertuples():
            lines.append(
                f"| {r.model} | {r.baseline} | {r.metric} | {r.n_users} | {r.mean_diff:+.4f} | [{r.ci_low:+.4f}, {r.ci_high:+.4f}] "
                f"| {_p(r.p_wilcoxon)} | {_p(r.p_holm)} | {_p(r.p_ttest_seeds)} | {_p(r.p_holm_ttest)} |"
            )
    return lines + [""]


def _against_strongest(agg: pd.DataFrame, tests: pd.DataFrame, strongest: str, metric: str, alpha: float) -> str:
    """The table's answer in words: which models beat the strongest baseline on the first metric,
    which lose to it and which the data cannot tell apart from it (the marks say the same per
    baseline; this is the one comparison a decision rests on)."""
    mean = agg[(agg["model"] == strongest) & (agg["name"] == metric)]["mean"]
    rows = tests[(tests["baseline"] == strongest) & (tests["metric"] == metric)]
    groups = {v: rows[rows["verdict"] == v] for v in ("better", "worse", "no significant difference")}

    def named(frame: pd.DataFrame) -> str:
        return "; ".join(f"{r.model} ({r.mean_diff:+.4f}, 95% CI [{r.ci_low:+.4f}, {r.ci_high:+.4f}], p Holm {_p(r.p_holm)})" for r in frame.itertuples())

    text = f"**Against the strongest baseline on {metric}**, {strongest}" + (f" (mean {mean.iloc[0]:.4f}). " if len(mean) else ". ")
    criterion = f"Holm-adjusted Wilcoxon p < {alpha} and the difference's 95% interval on the better side of zero"
    text += f"Better ({criterion}): {named(groups['better'])}. " if len(groups["better"]) else f"No model is better than {strongest} on these data ({criterion}). "
    if len(groups["no significant difference"]):
        text += f"Not told apart from it: {named(groups['no significant difference'])}. "
    if len(groups["worse"]):
        text += f"Worse: {named(groups['worse'])}."
    return text.rstrip()


def _family_size(tests: pd.DataFrame) -> str:
    """``m = 9``, or ``m = 7 to 9`` where undefined tests make the families differ in size."""
    sizes = tests["holm_m"].astype(int)
    lo, hi = int(sizes.min()), int(sizes.max())
    return f"m = {hi}" if lo == hi else f"m = {lo} to {hi}"


def _p(p: float) -> str:
    return "n/a" if np.isnan(p) else (f"{p:.2e}" if p < 1e-3 else f"{p:.3f}")
