"""Reading a regression record back: the verdict of a paired test in each block of seeds."""

from __future__ import annotations

import json

import pytest

from crossrec_lit.errors import CrossRecError
from crossrec_lit.reporting import block_verdicts, regression_metrics, seed_dependent


def entries(test: str, ci_low, ci_high, p_holm) -> dict:
    return {f"{test}.{part}": {"values": list(values)} for part, values in (("ci_low", ci_low), ("ci_high", ci_high), ("p_holm", p_holm))}


def test_block_verdicts_apply_the_chapters_rule_to_each_block() -> None:
    metrics = entries("paired.CoNet.Overlap popularity", [0.01, -0.02, -0.03], [0.03, 0.01, -0.01], [0.001, 0.2, 0.002])
    assert block_verdicts(metrics, "paired.CoNet.Overlap popularity") == ["better", "no significant difference", "worse"]


def test_an_error_metric_is_better_when_smaller() -> None:
    # a negative difference in RMSE (model minus baseline) is an improvement
    metrics = entries("rating.rmse.CMF", [-0.3], [-0.1], [0.001])
    assert block_verdicts(metrics, "rating.rmse.CMF") == ["better"]
    assert block_verdicts(metrics, "rating.rmse.CMF", metric="ndcg@10") == ["worse"]


def test_seed_dependent_names_only_the_tests_whose_verdict_changes() -> None:
    metrics = {**entries("t.same", [0.1, 0.2], [0.3, 0.4], [0.01, 0.001]),
               **entries("t.direction", [0.1, -0.4], [0.3, -0.2], [0.01, 0.001]),  # small p in both blocks, opposite signs
               **entries("t.p", [0.1, 0.1], [0.3, 0.3], [0.01, 0.2])}
    found = seed_dependent(metrics, {"same": "t.same", "direction": "t.direction", "p": "t.p", "absent": "t.absent"})
    assert found == {"direction": ["better", "worse"], "p": ["better", "no significant difference"]}


def test_a_missing_record_is_empty_and_a_broken_one_names_the_fix(tmp_path) -> None:
    assert regression_metrics(tmp_path / "none.json") == {}
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"metrics": entries("t", [0.1], [0.2], [0.01])}))
    assert block_verdicts(regression_metrics(good), "t") == ["better"]
    broken = tmp_path / "broken.json"
    broken.write_text('{"metrics": ')
    with pytest.raises(CrossRecError, match="regress-update"):
        regression_metrics(broken)


def test_verdict_spread_says_which_verdicts_the_seeds_decide() -> None:
    from crossrec_lit.reporting import verdict_spread

    metrics = {**entries("t.a", [0.1, 0.2, 0.1], [0.3, 0.4, 0.3], [0.01, 0.001, 0.02]),
               **entries("t.b", [0.1, -0.1, 0.1], [0.3, 0.1, 0.3], [0.01, 0.5, 0.01])}
    both = verdict_spread(metrics, {"A against X": "t.a", "B against X": "t.b"}, "ndcg@10", block="2 seeds")
    assert both == ("Over the 3 blocks of seeds of the chapter's regression record (each block 2 seeds), 1 of these 2 verdicts changes "
                    "with the seeds, so these stores do not settle it: B against X (better, no significant difference, better). "
                    "The others are the same in every block.")
    assert verdict_spread(metrics, {"A against X": "t.a"}) == "This verdict is the same in all 3 blocks of seeds of the chapter's regression record."
    assert verdict_spread({}, {"A against X": "t.a"}).startswith("There is no regression record")


def test_verdict_spread_of_a_single_test_reads_as_one_sentence() -> None:
    from crossrec_lit.reporting import verdict_spread

    metrics = entries("blend.vs", [0.1, -0.1, -0.3], [0.3, 0.1, -0.1], [0.001, 1.0, 0.01])
    assert verdict_spread(metrics, {"the blend": "blend.vs"}, "ndcg@10") == (
        "Over the 3 blocks of seeds of the chapter's regression record, this verdict changes with the seeds "
        "(better, no significant difference, worse), so these stores do not settle it.")
