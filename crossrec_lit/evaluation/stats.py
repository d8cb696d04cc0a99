"""Aggregation over seeds and paired significance tests against baselines.

Three views of "is model A better than baseline B", each answering a different doubt:

* Wilcoxon signed-rank on per-user differences pooled over seeds/folds: is the difference
  consistent across users? (Pairs are the same user in the same seed; users where both models
  score the same are dropped, the usual ``zero_method="wilcox"``.)
* paired t-test on per-seed means: does it hold across training randomness and folds?
* bootstrap confidence interval of the mean per-user difference: how large is it?

scipy's implementations are used; a p-value is ``nan`` where the test is undefined (fewer than
two seeds, or no non-zero difference).
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
        raise CrossRecError(f"metric {metric!r} is not among the per-user columns", f"use one of {[c for c in per_user.columns if '@' in c]}")
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


def paired_tests(per_user: pd.DataFrame, baselines: Sequence[str], metrics: Sequence[str]) -> pd.DataFrame:
    """Every model against every named baseline on every metric."""
    rows = []
    models = list(dict.fromkeys(per_user["model"]))
    for baseline in baselines:
        for model in models:
            if model == baseline:
                continue
            for metric in metrics:
                rows.append(paired_test(per_user, model, baseline, metric))
    return pd.DataFrame(rows)


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
    significant improvement over each baseline, and the paired tests behind them.

    In each protocol the *strongest* baseline (the named baseline with the best mean on the
    first metric) is singled out, since beating a weak baseline proves little.
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
        strongest = max(present, key=lambda b: first.get(b, float("-inf")))
    fit = results[results["split"] == "fit"].groupby(["model", "metric"])["value"].mean()
    lines = [f"## {protocol}", ""]
    extra = f" {metrics[0]} vs {strongest}: diff (p) |" if strongest else ""
    lines += ["| model | " + " | ".join(metrics) + " | best epoch | fit s |" + extra, "|" + "---|" * (len(metrics) + 3 + bool(strongest))]
    for model in models:
        cells = []
        for m in metrics:
            row = agg[(agg["model"] == model) & (agg["name"] == m)]
            cell = "n/a" if row.empty else f"{row['mean'].iloc[0]:.4f} +/- {row['std'].iloc[0]:.4f}"
            if not tests.empty:
                sig = tests[(tests["model"] == model) & (tests["metric"] == m) & (tests["p_wilcoxon"] < alpha) & (tests["mean_diff"] > 0)]
                cell += "".join(f" ^{present.index(b) + 1}" for b in sig["baseline"])
            cells.append(cell)
        line = f"| {model} | " + " | ".join(cells) + f" | {fit.get((model, 'best_epoch'), float('nan')):.0f} | {fit.get((model, 'fit_seconds'), float('nan')):.1f} |"
        if strongest:
            t = tests[(tests["model"] == model) & (tests["baseline"] == strongest) & (tests["metric"] == metrics[0])] if not tests.empty else tests
            line += f" {t['mean_diff'].iloc[0]:+.4f} ({_p(t['p_wilcoxon'].iloc[0])}) |" if len(t) else " - |"
        lines.append(line)
    if not tests.empty:
        lines += [
            "",
            f"^N: significantly better than baseline N (Wilcoxon signed-rank on per-user values pooled over seeds, p < {alpha}): "
            + ", ".join(f"{i + 1} = {b}" for i, b in enumerate(present))
            + f". Strongest baseline on {metrics[0]}: {strongest}.",
            "",
            "| model | baseline | metric | users | mean diff | 95% CI | p Wilcoxon | p t-test (seeds) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in tests.itertuples():
            lines.append(
                f"| {r.model} | {r.baseline} | {r.metric} | {r.n_users} | {r.mean_diff:+.4f} | [{r.ci_low:+.4f}, {r.ci_high:+.4f}] | {_p(r.p_wilcoxon)} | {_p(r.p_ttest_seeds)} |"
            )
    return lines + [""]


def _p(p: float) -> str:
    return "n/a" if np.isnan(p) else (f"{p:.2e}" if p < 1e-3 else f"{p:.3f}")
