"""Chapter "The algorithm, step by step": smoke run and the claims its prose makes."""

from __future__ import annotations

from pathlib import Path

import pytest

from chapter_runner import assert_metric as _assert_metric
from chapter_runner import run_chapter as _run_chapter
from chapter_runner import smoke

pytestmark = pytest.mark.chapter
# Tiny sweeps: two points each, one seed; four epochs, two of them frozen.
SMOKE = {
    "n_users": 400,
    "epochs": 4,
    "freeze_epochs": 2,
    "mapping_epochs": 1,
    "patience": 2,
    "source_weights": [1.0],
    "source_sizes": [5, 24],
    "overlaps": [0.3, 0.9],
    "domain_shifts": [0.0, "independent"],
    "sweep_seeds": 1,
}
MODELS = ("Popularity", "Overlap popularity", "Target-only MF", "EMCDR (map)", "Shared customers (transfer)")


def check_algorithm(rec: dict, params: dict) -> None:
    expected = {
        "preprocess", "source_val_ndcg@10", "transferred", "skipped", "frozen_distance_max",
        "released_distance_last", "recommended_rows", "test_ndcg@10", "test_recall@10",
        "paired_vs_target_only", "grid", "chosen_weight", "chosen_test_ndcg@10", "baseline_val_ndcg@10",
        "source_size", "overlap", "guard_sweeps", "independent", "domain_shift", "cost", "sizes", "parameters", "seed",
    }  # fmt: skip
    assert expected <= rec.keys(), f"missing keys: {sorted(expected - rec.keys())}"
    seeds = rec["parameters"]["seeds"]
    assert len(seeds) == params.get("sweep_seeds", 3)

    # step 1: exactly the injected repeats go; the cold-start split takes its shares of the shared users
    pre = rec["preprocess"]
    assert pre["removed_by_dedupe"] == pre["n_repeats"] > 0
    assert 0 < pre["interactions_clean"] <= pre["interactions_raw"]
    assert pre["n_test_users"] == round(0.2 * pre["n_shared"])
    assert pre["n_valid_users"] == round(0.1 * pre["n_shared"])

    # step 3: the two mapped tables moved and nothing was skipped; frozen is frozen, released moves
    assert rec["transferred"] == ["source_item_emb.weight", "user_emb.weight"]
    assert rec["skipped"] == {"not_in_source": 0, "shape_mismatch": 0, "unused_source": 0}
    assert rec["frozen_distance_max"] == 0.0
    assert rec["released_distance_last"] > 0.0
    assert rec["recommended_rows"] == 3 * 10

    # step 6: metrics in range; the bootstrap interval contains the mean difference
    for table in ("test_ndcg@10", "test_recall@10"):
        assert set(MODELS) == rec[table].keys()
        for model, value in rec[table].items():
            _assert_metric(value, f"{table}[{model}]")
    paired = rec["paired_vs_target_only"]
    assert paired["n_users"] == pre["n_test_users"]
    assert paired["ci_low"] <= paired["mean_diff"] <= paired["ci_high"]
    assert paired["mean_diff"] == pytest.approx(rec["test_ndcg@10"]["Shared customers (transfer)"] - rec["test_ndcg@10"]["Target-only MF"], abs=1e-6)

    # step 7: the chosen lambda is the grid's best on validation (never on test)
    grid = rec["grid"]
    assert len(grid) == len(params.get("source_weights", [0.1, 1.0, 3.0]))
    best = max(grid, key=lambda w: grid[w]["val"])
    assert float(best) == rec["chosen_weight"]
    for key in ("source_val_ndcg@10", "chosen_test_ndcg@10", "baseline_val_ndcg@10"):
        _assert_metric(rec[key], key)
    for point in grid.values():
        _assert_metric(point["val"], "grid val")
        assert params.get("freeze_epochs", 10) + 1 <= point["epochs_run"] <= params.get("epochs", 20)

    # the sweeps: one entry per point; the source-size sweep shares its target-only baseline
    sizes = params.get("source_sizes", [5, 8, 12, 24])
    assert sorted(rec["source_size"], key=float) == [f"{n:g}" for n in sizes]
    assert sorted(rec["overlap"], key=float) == [f"{o:g}" for o in params.get("overlaps", [0.02, 0.1, 0.3, 0.9])]
    for sweep in ("source_size", "overlap"):
        for point in rec[sweep].values():
            _assert_metric(point["transfer"], f"{sweep} transfer")
            _assert_metric(point["target_only"], f"{sweep} target-only")
            assert point["gain"] == pytest.approx(point["transfer"] - point["target_only"], abs=1e-9)
    baselines = {round(p["target_only"], 9) for p in rec["source_size"].values()}
    assert len(baselines) == 1, "store B and the split must not change with the source size"
    assert len(rec["independent"]["gain"]) == len(seeds) == len(rec["independent"]["guard"])
    # (c) one row per domain shift, in the parameter's order, with the generator's taste correlation
    shifts = rec["domain_shift"]
    assert list(shifts) == [str(x) for x in params.get("domain_shifts", [0.0, 0.5, 1.0, "independent"])]
    for shift, row in shifts.items():
        expected_corr = 0.0 if shift == "independent" else 1.0 / (1.0 + float(shift) ** 2)
        assert row["taste_correlation"] == pytest.approx(expected_corr, abs=1e-12)
        assert row["gain"] == pytest.approx(row["transfer"] - row["target_only"], abs=1e-12)
    assert shifts["independent"]["gain"] == pytest.approx(sum(rec["independent"]["gain"]) / len(seeds), abs=1e-12)
    guard = rec["guard_sweeps"]
    assert guard["runs"] == len(seeds) * (len(sizes) + len(rec["overlap"]))
    assert 0 <= guard["false_alarms"] + guard["misses"] <= guard["runs"]

    # (d) parameters: (customers + items) x dim per model; transfer = target-only + store A's item table
    size, cost = rec["sizes"], rec["cost"]["parameters"]
    users, a_items, b_items, dim = size["num_users"], size["num_source_items"], size["num_target_items"], size["embedding_dim"]
    assert cost["source BPR-MF (step 2)"] == (users + a_items) * dim
    assert cost["target-only MF (step 6)"] == (users + b_items) * dim
    assert cost["transfer model (step 4)"] == (users + a_items + b_items) * dim
    assert cost["source + transfer"] == cost["source BPR-MF (step 2)"] + cost["transfer model (step 4)"]
    # Claim that holds in smoke mode (checked over seeds 0-4): source + transfer takes longer than
    # target-only training. Observed median ratios 2.4-4.1 on a busy 2-core machine; asserted > 1.
    # (The accuracy claims do not hold after 4 epochs on 400 customers; they are checked below.)
    assert rec["cost"]["sweep_ratio_median"] > 1.0
    assert rec["cost"]["source_seconds"] + rec["cost"]["transfer_seconds"] > rec["cost"]["target_only_seconds"]


def test_smoke(tmp_path: Path) -> None:
    check_algorithm(smoke("algorithm", tmp_path, SMOKE), SMOKE)


@pytest.mark.slow
def test_algorithm_book_settings(tmp_path: Path) -> None:
    """The prose's claims at the book's own parameters (about 80 s of CPU, 2-5 min on a busy machine).

    Checked over book seeds 0, 1, 2 (sweep seeds 0-4) before asserting; observed values below.
    """
    rec, _ = _run_chapter("algorithm", tmp_path, {})
    check_algorithm(rec, {})
    ndcg = rec["test_ndcg@10"]
    transfer = ndcg["Shared customers (transfer)"]
    # step 6: transfer beats every single-store model and overlap popularity on cold-start users
    # (observed margin over the best of them 0.067-0.105 NDCG@10; paired CI lower bound 0.056-0.091)
    for baseline in ("Popularity", "Overlap popularity", "Target-only MF"):
        assert transfer > ndcg[baseline] + 0.05, baseline
    assert rec["paired_vs_target_only"]["ci_low"] > 0
    # step 7: on related stores the guard stays silent
    assert not any(point["guard"] for point in rec["grid"].values())
    # (a) more source data, more gain; too little source data, negative gain
    # (observed mean gains: 5 -> -0.046..-0.027, 12 -> 0.076..0.089, 24 -> 0.160..0.171)
    sizes = rec["source_size"]
    assert sizes["24"]["gain"] > sizes["12"]["gain"] > sizes["5"]["gain"]
    assert sizes["24"]["gain"] > 0.05 and sizes["5"]["gain"] < 0
    # (b) more overlap, more gain (observed: 0.1 -> 0.014..0.037, 0.9 -> 0.107..0.126)
    overlap = rec["overlap"]
    assert overlap["0.9"]["gain"] > overlap["0.1"]["gain"] and overlap["0.9"]["gain"] > 0.05
    # (c) unrelated tastes: transfer loses in every seed and the guard fires
    # (observed gains -0.047..-0.010 in 9 of 9 runs; the guard fired in all 9)
    assert all(g < 0 for g in rec["independent"]["gain"])
    assert all(rec["independent"]["guard"])
    # (c) the gain falls as the tastes drift apart: related tastes help, independent ones hurt
    # (observed over book seeds 0-2, i.e. sweep seeds 0-4, mean gains: correlation 1 -> 0.109..0.115,
    # 0.8 -> 0.041..0.056, 0.5 -> -0.013..0.005 (within its spread), 0 -> -0.040..-0.019)
    shifts = rec["domain_shift"]
    assert shifts["0.0"]["gain"] > shifts["0.5"]["gain"] > shifts["independent"]["gain"]
    assert shifts["0.0"]["gain"] > 0.05 and shifts["independent"]["gain"] < 0
