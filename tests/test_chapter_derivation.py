"""Chapter "Mathematical model and derivation": smoke runs and the claims its prose makes.

The chapter derives gradients and closed forms by hand and compares each with the package
(autograd on the package's losses, the gradient a Lightning step actually used, the package's
closed form). Every comparison is recorded as a maximum absolute difference under ``checks``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from chapter_runner import run_chapter as _run_chapter
from chapter_runner import smoke

pytestmark = pytest.mark.chapter
SMOKE = {"n_users": 400, "source_epochs": 2, "target_epochs": 2, "gd_steps": 300, "adam_steps": 60, "l2sp_steps": 5}
BOOK_LAMBDAS = [0.0, 0.5, 1.0, 2.0]  # the parameters cell's default; SMOKE leaves it alone

# Every check compares two computations of the same quantity, so the tolerance is set by rounding.
# Observed in smoke mode (seeds 0-3): float32 at most 1.2e-7, float64 at most 5e-16 (8e-15 at the
# book's settings), on quantities of size up to ~1. 1e-5 is the bound the chapter promises for
# float32; in float64 anything above 1e-10 would be a wrong formula, not rounding.
TOLERANCE = {"float32": 1e-5, "float64": 1e-10}
# MF (4) + BPR (3) + EMCDR closed form (4) and stationarity (4) + L2-SP (3) + CMF (1) + PTUPCDR (1),
# plus three tables per checked lambda
FIXED_CHECKS = 20


def check_derivation(rec: dict, dtype: str) -> None:
    expected = {
        "checks", "max_check_diff", "n_checks", "lambdas", "joint_max_diff_per_lambda", "joint_grad_norms",
        "lambda_seed_equivalent", "emcdr", "l2sp", "dtype", "n_users", "embedding_dim", "seed",
    }  # fmt: skip
    assert expected <= rec.keys(), f"missing keys: {sorted(expected - rec.keys())}"
    assert rec["dtype"] == dtype
    lambdas = rec["lambdas"]
    assert lambdas == BOOK_LAMBDAS

    # every recorded check difference is rounding-sized
    checks = rec["checks"]
    assert rec["n_checks"] == len(checks) == FIXED_CHECKS + 3 * len(lambdas)
    for lam in lambdas:
        assert sum(f"lambda={lam:g}:" in name for name in checks) == 3, lam
    bad = {name: diff for name, diff in checks.items() if not diff < 1e-5}
    assert not bad, f"checks above 1e-5: {bad}"
    bad = {name: diff for name, diff in checks.items() if not diff < TOLERANCE[dtype]}
    assert not bad, f"checks above {TOLERANCE[dtype]:g} in {dtype}: {bad}"
    assert rec["max_check_diff"] == max(checks.values())
    assert set(rec["joint_max_diff_per_lambda"]) == {f"{lam:g}" for lam in lambdas}

    # the checks are not vacuous: the parts compared are nonzero where the derivation says so
    for lam in lambdas:
        norms = rec["joint_grad_norms"][f"{lam:g}"]
        assert norms["target"] > 0
        assert (norms["lambda_source"] > 0) == (lam > 0), (lam, norms)
    assert rec["l2sp"]["largest_pull"] > 1e-4  # observed 1.1e-3 to 1.3e-3 in smoke mode: 100x the tolerance

    # section 2: the seed's summed objective corresponds to source_weight = |O^S| / |O^T| (> 1 here:
    # the generator gives store A 12 interactions per user against store B's 8)
    assert rec["lambda_seed_equivalent"] > 1

    # section 6: gradient descent with step 1/L never exceeds its guaranteed rate, and both it and
    # the package's Adam overlap phase approach the closed form (smoke, seeds 0-3: GD 100x closer
    # after 300 steps, Adam 20-30x after 60; asserted 10x and 5x)
    emcdr = rec["emcdr"]
    assert emcdr["gd_max_excess_over_bound"] <= TOLERANCE[dtype]
    assert emcdr["condition_number"] >= 1
    assert emcdr["gd_final_distance"] < emcdr["gd_initial_distance"] / 10
    assert emcdr["adam_final_distance"] < emcdr["adam_initial_distance"] / 5
    assert emcdr["adam_best_distance"] <= emcdr["adam_final_distance"]
    assert emcdr["n_overlap_users"] > rec["embedding_dim"] + 1  # the unregularised problem is well posed


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_smoke(dtype: str, tmp_path: Path) -> None:
    check_derivation(smoke("derivation", tmp_path, {**SMOKE, "dtype": dtype}), dtype)


@pytest.mark.slow
def test_derivation_book_settings(tmp_path: Path) -> None:
    """What the prose says about the book's own run of section 6.

    At the book's parameters (seed 0): gradient descent ends 5.3e-8 from the closed form after 600
    steps; Adam comes within 1.9e-5 at step 263, then climbs back to 8.3e-4 (the prose says the
    distance climbs back up after its minimum).
    """
    rec, _ = _run_chapter("derivation", tmp_path, {})
    check_derivation(rec, "float64")
    emcdr = rec["emcdr"]
    assert emcdr["gd_final_distance"] < 1e-6
    assert emcdr["adam_final_distance"] > 10 * emcdr["adam_best_distance"]
