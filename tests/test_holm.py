"""Holm's step-down correction of the summary's paired tests (crossrec_lit.evaluation.stats)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from crossrec_lit.errors import CrossRecError
from crossrec_lit.evaluation.stats import _p, holm_adjust, paired_tests, summary_markdown


# ---------------------------------------------------------------------- holm_adjust
def test_holm_hand_computed():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> running max 0.06
    np.testing.assert_allclose(holm_adjust([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])


def test_holm_caps_at_one_and_keeps_a_single_test():
    # sorted: 0.2*4 = 0.8, 0.35*3 = 1.05 -> 1, 0.4*2 = 0.8 -> running max 1, 0.5*1 -> 1
    np.testing.assert_allclose(holm_adjust([0.2, 0.5, 0.4, 0.35]), [0.8, 1.0, 1.0, 1.0])
    # the running max: 0.2*3 = 0.6, 0.4*2 = 0.8, 0.5*1 = 0.5 -> 0.8
    np.testing.assert_allclose(holm_adjust([0.2, 0.5, 0.4]), [0.6, 0.8, 0.8])
    np.testing.assert_allclose(holm_adjust([0.03]), [0.03])
    assert holm_adjust([]).shape == (0,)


def test_holm_ties_get_the_same_value():
    np.testing.assert_allclose(holm_adjust([0.01, 0.01, 0.02]), [0.03, 0.03, 0.03])


def test_holm_is_monotone_and_never_below_raw():
    rng = np.random.default_rng(7)
    for _ in range(50):
        p = rng.uniform(0, 0.2, size=rng.integers(1, 15))
        adj = holm_adjust(p)
        order = np.argsort(p)
        assert np.all(np.diff(adj[order]) >= -1e-15), "adjusted p must keep the order of the raw p"
        assert np.all(adj >= p - 1e-15) and np.all(adj <= 1.0)
        # Holm lies between no correction and Bonferroni
        assert np.all(adj <= np.minimum(1.0, p * len(p)) + 1e-15)


def test_holm_nan_stays_nan_and_is_not_counted():
    adj = holm_adjust([0.01, np.nan, 0.04, np.nan, 0.03, 0.005])
    assert np.isnan(adj[1]) and np.isnan(adj[3])
    # m = 4 defined p-values: the same as the hand-computed family above
    np.testing.assert_allclose(adj[[0, 2, 4, 5]], [0.03, 0.06, 0.06, 0.02])
    assert np.isnan(holm_adjust([np.nan, np.nan])).all()


def test_holm_refuses_non_p_values():
    with pytest.raises(CrossRecError, match=r"\[0, 1\]"):
        holm_adjust([0.5, 1.5])
    with pytest.raises(CrossRecError, match="1-d"):
        holm_adjust([[0.1, 0.2]])


# ---------------------------------------------------------------------- a synthetic table
N_USERS, SEEDS = 40, (0, 1)
# per-(seed, user) differences symmetric around a small shift: raw Wilcoxon p about 0.039
_SPREAD = (np.arange(N_USERS * len(SEEDS)) - (N_USERS * len(SEEDS) - 1) / 2) / (N_USERS * len(SEEDS))


def _per_user() -> pd.DataFrame:
    """Baseline Pop at 0.5 for everyone, and five models against it:
    Strong (+0.2 everywhere), Worse (-0.2), Weak (a small, consistent-ish gain: raw p < 0.05 that
    does not survive Holm over the family), Same (symmetric noise, p = 1) and Clone (= Pop,
    undefined p)."""
    n = N_USERS * len(SEEDS)
    diffs = {
        "Pop": np.zeros(n),
        "Strong": 0.2 + 0.01 * _SPREAD,
        "Weak": (_SPREAD + 0.07) * 0.1,
        "Worse": -0.2 + 0.01 * _SPREAD,
        "Same": 0.1 * _SPREAD,
        "Clone": np.zeros(n),
    }
    seed = np.repeat(SEEDS, N_USERS)
    user = np.tile([f"u{i}" for i in range(N_USERS)], len(SEEDS))
    frames = [pd.DataFrame({"model": m, "seed": seed, "user": user, "ndcg@10": 0.5 + d, "recall@10": 0.5 + 0.5 * d}) for m, d in diffs.items()]
    return pd.concat(frames, ignore_index=True)


def _results(per_user: pd.DataFrame, protocol: str = "P1") -> pd.DataFrame:
    rows = []
    for (model, seed), g in per_user.groupby(["model", "seed"], sort=False):
        for col in ("ndcg@10", "recall@10"):
            metric, _, k = col.partition("@")
            rows.append({"model": model, "protocol": protocol, "split": "test", "metric": metric, "k": int(k), "seed": seed, "value": g[col].mean()})
    return pd.DataFrame(rows)


def _row(summary: str, model: str) -> str:
    (line,) = [line for line in summary.splitlines() if line.startswith(f"| {model} | 0.")]
    return line


def test_paired_tests_adjust_within_each_baseline_and_metric():
    per_user = _per_user()
    tests = paired_tests(per_user, ["Pop", "Same"], ["ndcg@10", "recall@10"])
    assert {"p_wilcoxon", "p_ttest_seeds", "p_holm", "p_holm_ttest", "holm_m"} <= set(tests.columns)
    for (baseline, metric), family in tests.groupby(["baseline", "metric"]):
        assert len(family) == 5  # every other model
        np.testing.assert_allclose(family["p_holm"], holm_adjust(family["p_wilcoxon"].to_numpy()), equal_nan=True)
        np.testing.assert_allclose(family["p_holm_ttest"], holm_adjust(family["p_ttest_seeds"].to_numpy()), equal_nan=True)
        assert (family["holm_m"] == family["p_wilcoxon"].notna().sum()).all()
    clone = tests[(tests["model"] == "Clone") & (tests["baseline"] == "Pop")]
    assert clone["p_wilcoxon"].isna().all() and clone["p_holm"].isna().all() and clone["p_holm_ttest"].isna().all()
    assert (tests.loc[tests["baseline"] == "Pop", "holm_m"] == 4).all()  # Clone's undefined test is not counted


def test_summary_mark_disappears_after_holm():
    per_user = _per_user()
    tests = paired_tests(per_user, ["Pop"], ["ndcg@10"]).set_index("model")
    weak = tests.loc["Weak"]
    # the premise: uncorrected, Weak would be marked significantly better than Pop ...
    assert weak["mean_diff"] > 0 and weak["p_wilcoxon"] < 0.05
    assert weak["p_wilcoxon"] == pytest.approx(stats.wilcoxon((_SPREAD + 0.07) * 0.1).pvalue)
    # ... and Holm over the m = 4 defined tests lifts it above 0.05 (rank 3 of 4: times 2)
    assert weak["p_holm"] == pytest.approx(2 * weak["p_wilcoxon"]) and weak["p_holm"] > 0.05

    summary = summary_markdown(_results(per_user), per_user, title="t", metrics=("ndcg@10",), baselines=("Pop",))
    assert "^1" not in _row(summary, "Weak") and "v1" not in _row(summary, "Weak")
    # the correction keeps real wins and losses
    assert "^1" in _row(summary, "Strong") and "v1" not in _row(summary, "Strong")
    assert "v1" in _row(summary, "Worse") and "^1" not in _row(summary, "Worse")
    assert "^1" not in _row(summary, "Same") and "v1" not in _row(summary, "Same")
    assert "^1" not in _row(summary, "Clone") and "v1" not in _row(summary, "Clone")
    # the "vs strongest baseline" column shows the adjusted p, not the raw one
    assert "ndcg@10 vs Pop: diff (p Holm)" in summary
    assert f"({_p(weak['p_holm'])}) |" in _row(summary, "Weak") and f"({_p(weak['p_wilcoxon'])})" not in _row(summary, "Weak")
    # the tests table shows raw and adjusted p side by side
    assert "| p Wilcoxon | p Wilcoxon (Holm) | p t-test (seeds) | p t-test (Holm) |" in summary
    (test_row,) = [line for line in summary.splitlines() if line.startswith("| Weak | Pop | ndcg@10 |")]
    assert f"| {_p(weak['p_wilcoxon'])} | {_p(weak['p_holm'])} |" in test_row
    assert "Paired tests are Holm-corrected over the m = 4 models compared with each baseline on each metric" in summary
    assert "vN: significantly worse than baseline N" in summary and "Holm-adjusted p < 0.05" in summary


def test_summary_family_is_one_protocol_table():
    """Two protocols with different models: each table is its own family (its own m)."""
    a = _per_user()
    b = a[a["model"].isin(["Pop", "Strong", "Weak"])].replace({"model": {"Pop": "Pop2", "Strong": "Strong2", "Weak": "Weak2"}})
    results = pd.concat([_results(a, "P1"), _results(b, "P2")], ignore_index=True)
    summary = summary_markdown(results, pd.concat([a, b], ignore_index=True), title="t", metrics=("ndcg@10",), baselines=("Pop", "Pop2"))
    p1, p2 = summary.split("## P2")
    assert "m = 4 models" in p1 and "m = 2 models" in p2
    # in the two-model family Weak's p is doubled at most once (rank 2 of 2: times 1) and survives
    assert "^1" in _row(p2, "Weak2")


def test_family_size_range_when_families_differ():
    """A model tied with the baseline on one metric only: that metric's family is one smaller."""
    per_user = _per_user()
    half = per_user[per_user["model"] == "Same"].assign(model="HalfClone")
    half["recall@10"] = 0.5  # = Pop's recall for every user: undefined test on recall only
    per_user = pd.concat([per_user, half], ignore_index=True)
    tests = paired_tests(per_user, ["Pop"], ["ndcg@10", "recall@10"])
    assert set(tests.loc[tests["metric"] == "ndcg@10", "holm_m"]) == {5}
    assert set(tests.loc[tests["metric"] == "recall@10", "holm_m"]) == {4}
    summary = summary_markdown(_results(per_user), per_user, title="t", metrics=("ndcg@10", "recall@10"), baselines=("Pop",))
    assert "Holm-corrected over the m = 4 to 5 models" in summary


# the t-test over two seeds of this constructed table meets nearly constant differences
@pytest.mark.filterwarnings("ignore:Precision loss occurred:RuntimeWarning")
def test_error_metrics_mark_a_smaller_value_as_better():
    # the same table read as errors: Strong's per-user RMSE is higher, so it is the worse model,
    # and the strongest baseline is the one with the lowest error
    per_user = _per_user().rename(columns={"ndcg@10": "rmse", "recall@10": "mae"})
    rows = []
    for (model, seed), g in per_user.groupby(["model", "seed"], sort=False):
        for col in ("rmse", "mae"):
            rows.append({"model": model, "protocol": "P", "split": "test", "metric": col, "k": None, "seed": seed, "value": g[col].mean()})
    summary = summary_markdown(pd.DataFrame(rows), per_user, title="t", metrics=("rmse", "mae"), baselines=("Pop", "Strong"))
    assert "v1" in _row(summary, "Strong") and "^1" not in _row(summary, "Strong")
    assert "^1" in _row(summary, "Worse") and "v1" not in _row(summary, "Worse")
    assert "Strongest baseline on rmse: Pop." in summary
    assert "lower is better for rmse, mae" in summary


def test_verdict_needs_the_adjusted_p_and_an_interval_on_one_side():
    from crossrec_lit.evaluation.stats import verdict

    assert verdict(0.01, 0.03, 0.001, "ndcg@10") == "better"
    assert verdict(-0.03, -0.01, 0.001, "ndcg@10") == "worse"
    assert verdict(-0.01, 0.03, 0.001, "ndcg@10") == "no significant difference"  # interval across zero
    assert verdict(0.01, 0.03, 0.2, "ndcg@10") == "no significant difference"  # p too large after Holm
    assert verdict(0.01, 0.03, float("nan"), "ndcg@10") == "no significant difference"
    assert verdict(-0.03, -0.01, 0.001, "rmse") == "better"  # a lower error
    tests = paired_tests(_per_user(), ["Pop"], ["ndcg@10"]).set_index("model")
    assert tests.loc["Strong", "verdict"] == "better" and tests.loc["Worse", "verdict"] == "worse"
    assert tests.loc["Weak", "verdict"] == "no significant difference"  # raw p < 0.05, Holm p > 0.05


def test_verdict_agreement_pairs_two_blocks_of_seeds():
    import pandas as pd

    from crossrec_lit import CrossRecError
    from crossrec_lit.evaluation.stats import verdict_agreement

    first = pd.DataFrame({"model": ["A", "B", "C"], "baseline": "P", "metric": "ndcg@10", "verdict": ["better", "no significant difference", "worse"], "mean_diff": [0.1, 0.0, -0.1]})
    second = first.assign(verdict=["better", "better", "worse"]).iloc[:2]  # C was not run again
    out = verdict_agreement(first, second).set_index("model")
    assert list(out.index) == ["A", "B"]
    assert out["agree"].tolist() == [True, False]
    assert out.loc["B", "verdict_second"] == "better"
    with pytest.raises(CrossRecError, match="lacks columns"):
        verdict_agreement(first.drop(columns="verdict"), second)


# Strong and Pop are both baselines in the second table: the t-test over two seeds of this
# constructed table meets nearly constant differences
@pytest.mark.filterwarnings("ignore:Precision loss occurred:RuntimeWarning")
def test_summary_says_what_beats_the_strongest_baseline():
    per_user = _per_user()
    summary = summary_markdown(_results(per_user), per_user, title="t", metrics=("ndcg@10",), baselines=("Pop",))
    (line,) = [line for line in summary.splitlines() if line.startswith("**Against the strongest baseline on ndcg@10**, Pop (mean ")]
    better, _, rest = line.partition("Better (Holm-adjusted Wilcoxon p < 0.05 and the difference's 95% interval on the better side of zero): ")[2].partition(". ")
    assert better.startswith("Strong (+") and "Weak" not in better
    # Weak wins before Holm only; Same and Clone tie with Pop
    apart = rest.partition("Not told apart from it: ")[2].partition(". Worse")[0]
    assert {part.split(" (")[0] for part in apart.split("; ")} == {"Weak", "Same", "Clone"}
    assert line.endswith(").") and "Worse: Worse (-" in line
    # with the winner among the baselines, nothing is better than it, and the sentence says so
    top = summary_markdown(_results(per_user), per_user, title="t", metrics=("ndcg@10",), baselines=("Pop", "Strong"))
    assert "**Against the strongest baseline on ndcg@10**, Strong (mean " in top and "No model is better than Strong on these data" in top
