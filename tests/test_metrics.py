"""Ranking metrics and the evaluation protocol, checked against a brute-force reference.

The reference below is deliberately naive plain Python: one user at a time, items sorted by
``(-score, index)`` (the documented tie rule: equal scores go to the lower item index), and the
formulas copied from the docstring of :mod:`crossrec_lit.evaluation.metrics`. Everything the
batched tensor code does is compared against it on random data with many ties.
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from crossrec_lit.data.sampling import EvalBatches
from crossrec_lit.errors import CrossRecError
from crossrec_lit.evaluation.metrics import (
    METRIC_NAMES,
    check_ks,
    full_ranking,
    metric_keys,
    ranking_metrics,
    rating_errors,
    sampled_ranking,
    topk_indices,
)
from crossrec_lit.evaluation.protocol import RankingAccumulator, evaluate

torch.set_num_threads(1)

TOL = 1e-6
KS = (1, 5, 10, 20)


# ---------------------------------------------------------------------------- reference
def ref_ranking(scores: list[float], exclude: set[int]) -> list[int]:
    """All non-excluded items, best first, ties to the lower index."""
    return sorted((i for i in range(len(scores)) if i not in exclude), key=lambda i: (-scores[i], i))


def ref_user_metrics(scores: list[float], relevant: set[int], exclude: set[int], k: int) -> dict[str, float]:
    """Precision/Recall/F1/NDCG/Hit/MRR@k of one user, by the docstring definitions.

    |R_u| counts every relevant item, also one that is excluded (it simply can never be found):
    that is what full_ranking does, and what the edge-case tests below pin down.
    """
    top = ref_ranking(scores, exclude)[:k]
    hits = [1.0 if item in relevant else 0.0 for item in top]
    n_hit = sum(hits)
    p = n_hit / k
    r = n_hit / len(relevant)
    f1 = 2 * p * r / (p + r) if p + r > 0 else 0.0
    dcg = sum(h / math.log2(rank + 2) for rank, h in enumerate(hits))
    idcg = sum(1.0 / math.log2(rank + 2) for rank in range(min(len(relevant), k)))
    first = next((rank for rank, h in enumerate(hits) if h), None)
    return {
        f"precision@{k}": p,
        f"recall@{k}": r,
        f"f1@{k}": f1,
        f"ndcg@{k}": dcg / idcg,
        f"hit@{k}": 1.0 if n_hit > 0 else 0.0,
        f"mrr@{k}": 0.0 if first is None else 1.0 / (first + 1),
    }


def ref_batch(scores: torch.Tensor, truth: list[set[int]], exclude: list[set[int]], ks) -> tuple[dict[str, list[float]], list[bool]]:
    rows = scores.tolist()
    out: dict[str, list[float]] = {key: [] for key in metric_keys(sorted(set(ks)))}
    valid = []
    for u, row in enumerate(rows):
        valid.append(bool(truth[u]))
        if not truth[u]:
            continue  # users with no relevant item are left out
        for k in ks:
            for key, value in ref_user_metrics(row, truth[u], exclude[u], k).items():
                out[key].append(value)
    return out, valid


def to_coords(sets: list[set[int]]) -> torch.Tensor:
    pairs = [(u, i) for u, items in enumerate(sets) for i in sorted(items)]
    if not pairs:
        return torch.zeros((2, 0), dtype=torch.long)
    return torch.tensor(pairs, dtype=torch.long).T.contiguous()


def random_case(seed: int, *, ties: bool, exclusions: bool = True, min_relevant: int = 0, n_items: int | None = None):
    rng = random.Random(seed)
    g = torch.Generator().manual_seed(seed)
    b = rng.randint(1, 40)
    n = n_items if n_items is not None else rng.randint(20, 70)
    if ties:
        scores = torch.randint(0, 4, (b, n), generator=g).float()  # integers 0..3: ties everywhere
    else:
        scores = torch.rand((b, n), generator=g, dtype=torch.float64).float() + 0.01  # no ties, all > 0
    truth = [set(rng.sample(range(n), rng.randint(min_relevant, min(8, n)))) for _ in range(b)]
    exclude = [set(rng.sample(range(n), rng.randint(0, n // 3))) if exclusions else set() for _ in range(b)]
    return scores, truth, exclude


def assert_matches_reference(scores, truth, exclude, ks):
    values, valid = full_ranking(scores, to_coords(truth), to_coords(exclude), ks)
    expected, expected_valid = ref_batch(scores, truth, exclude, ks)
    assert valid.tolist() == expected_valid
    assert set(values) == set(expected)
    for key, ref in expected.items():
        got = values[key].tolist()
        assert len(got) == len(ref), key
        np.testing.assert_allclose(got, ref, rtol=0, atol=TOL, err_msg=key)


# ---------------------------------------------------------------------------- the reference itself
def test_reference_hand_example():
    # the reference is what everything else is checked against, so check it by hand too
    m = ref_user_metrics([0.9, 0.8, 0.7, 0.6, 0.5, 0.4], {1, 3}, set(), 5)
    assert m["precision@5"] == pytest.approx(0.4)
    assert m["ndcg@5"] == pytest.approx(0.6509209298071326)
    assert m["mrr@5"] == pytest.approx(0.5)


# ---------------------------------------------------------------------------- property tests vs the reference
@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("ties", [True, False], ids=["ties", "continuous"])
def test_full_ranking_matches_reference(seed, ties):
    scores, truth, exclude = random_case(seed, ties=ties)
    ks = [k for k in KS if k <= scores.shape[1]]
    assert_matches_reference(scores, truth, exclude, ks)


@pytest.mark.parametrize("seed", range(6))
def test_full_ranking_matches_reference_small_catalogue(seed):
    # catalogues smaller than the largest K, heavy exclusion: -inf items fill the tail of the list
    rng = random.Random(100 + seed)
    n = rng.randint(1, 25)
    g = torch.Generator().manual_seed(seed)
    b = rng.randint(1, 30)
    scores = torch.randint(0, 3, (b, n), generator=g).float()
    truth = [set(rng.sample(range(n), rng.randint(0, n))) for _ in range(b)]
    exclude = [set(rng.sample(range(n), rng.randint(0, n))) for _ in range(b)]
    ks = [k for k in (1, 2, 3, 5, 10, 20) if k <= n]
    assert_matches_reference(scores, truth, exclude, ks)


def _mixed_case(seed: int, kind: str):
    """A 300-item catalogue whose users exclude 0 to 150 items, some relevant items excluded."""
    rng = random.Random(seed)
    g = torch.Generator().manual_seed(seed)
    b, n = rng.randint(10, 40), 300
    if kind == "continuous":
        scores = torch.rand((b, n), generator=g) + 0.5
    elif kind == "some_ties":
        scores = torch.randint(0, 60, (b, n), generator=g).float()
    else:
        scores = torch.randint(0, 4, (b, n), generator=g).float()
    sizes = [rng.choice([0, rng.randint(1, 10), rng.randint(55, 75), rng.randint(76, 150)]) for _ in range(b)]
    exclude = [set(rng.sample(range(n), e)) for e in sizes]
    truth = [set(rng.sample(range(n), rng.randint(0, 6))) for _ in range(b)]
    for u in range(b):
        if exclude[u] and rng.random() < 0.3:
            truth[u].add(rng.choice(sorted(exclude[u])))
    return scores, truth, exclude


@pytest.fixture
def path_counter(monkeypatch):
    """Counts the rows sent down each special path of the ranking code."""
    import crossrec_lit.evaluation.metrics as metrics_mod

    counts = {"copy": 0, "ties_subset": 0, "ties_full": 0}
    copy_rows, fix_ties = metrics_mod._topk_masked_rows, metrics_mod._fix_boundary_ties

    def counting_copy(scores, keys, k, rows):
        counts["copy"] += len(rows)
        return copy_rows(scores, keys, k, rows)

    def counting_ties(scores, vals, idx, straddle, exclude_keys=None):
        n_rows = int(straddle.sum())
        counts["ties_subset" if 4 * n_rows < len(scores) else "ties_full"] += n_rows
        return fix_ties(scores, vals, idx, straddle, exclude_keys)

    monkeypatch.setattr(metrics_mod, "_topk_masked_rows", counting_copy)
    monkeypatch.setattr(metrics_mod, "_fix_boundary_ties", counting_ties)
    return counts


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("kind", ["continuous", "some_ties", "many_ties"])
def test_full_ranking_matches_reference_mixed_exclusions(seed, kind, path_counter):
    # with exclusions the package ranks from the top K + 1 + e unmasked scores of a row, fixes
    # ties across K in place, and only ranks heavy rows (> 64 excluded) on a masked copy: every
    # path must give the reference answer
    import crossrec_lit.evaluation.metrics as metrics_mod

    scores, truth, exclude = _mixed_case(seed, kind)
    assert_matches_reference(scores, truth, exclude, KS)
    heavy = sum(len(e) > metrics_mod._MAX_CANDIDATE_EXCLUSIONS for e in exclude)
    assert path_counter["copy"] == heavy  # (all rows when all are heavy: the same number)
    if kind == "many_ties":
        # every light row straddles at K=20; the heavy ones do inside their masked copy
        assert path_counter["ties_full"] + path_counter["ties_subset"] >= len(scores)


def test_boundary_tie_in_a_few_rows(path_counter):
    # continuous scores except one row with a tie across K: the few-rows branch of the tie fix
    g = torch.Generator().manual_seed(3)
    scores = torch.rand((12, 100), generator=g)
    scores[4, [10, 20, 30, 40]] = 5.0  # four items tied for first place, K=2
    scores[4, 50] = 6.0
    truth = [{30}] * 12
    for exclude in ([set()] * 12, [{20}] + [set()] * 3 + [{20, 77}] + [set()] * 7):
        assert_matches_reference(scores, truth, exclude, [1, 2, 3])
    assert path_counter["ties_subset"] > 0 and path_counter["ties_full"] == 0
    top = topk_indices(scores, 3)[4].tolist()
    assert top == [50, 10, 20]


def test_candidate_path_is_taken_and_exact(path_counter):
    # continuous scores, few exclusions each: no row needs a masked copy or a tie fix
    g = torch.Generator().manual_seed(0)
    scores = torch.rand((50, 400), generator=g)
    rng = random.Random(0)
    exclude = [set(rng.sample(range(400), rng.randint(0, 20))) for _ in range(50)]
    # put the excluded items on top so that masking them changes the list
    for u, items in enumerate(exclude):
        for i in items:
            scores[u, i] += 1.0
    truth = [set(rng.sample(range(400), rng.randint(1, 5))) for _ in range(50)]
    assert_matches_reference(scores, truth, exclude, KS)
    assert path_counter == {"copy": 0, "ties_subset": 0, "ties_full": 0}


@pytest.mark.parametrize("seed", range(20))
def test_masked_topk_equals_ranking_a_masked_copy(seed):
    # the optimised exclusion path against the plain definition it replaces: copy the scores,
    # write -inf at the excluded entries, topk_indices. Includes -inf scores from the model (a tie
    # at -inf takes in the excluded items too) and NaN at excluded entries.
    from crossrec_lit.evaluation.metrics import _masked_topk

    rng = random.Random(seed)
    g = torch.Generator().manual_seed(seed)
    b, n = rng.randint(1, 30), rng.randint(2, 200)
    levels = rng.choice([2, 5, 1000, 0])
    scores = torch.rand((b, n), generator=g)
    if levels:
        scores = torch.floor(scores * levels)
    scores[torch.rand((b, n), generator=g) < rng.choice([0.0, 0.05, 0.9])] = float("-inf")
    exclude = [set(rng.sample(range(n), min(n, rng.choice([0, rng.randint(1, 10), rng.randint(50, 120)])))) for _ in range(b)]
    coords = to_coords(exclude)
    masked = scores.clone()
    masked[coords[0], coords[1]] = float("-inf")
    with_nan = scores.clone()
    with_nan[coords[0], coords[1]] = float("nan")  # masked anyway: must not matter
    keys = torch.unique(coords[0] * n + coords[1])
    before = scores.clone()
    for k in sorted({1, min(n, 5), min(n, 20), n}):
        expected = topk_indices(masked, k)
        assert torch.equal(_masked_topk(scores, keys, k), expected), k
        assert torch.equal(_masked_topk(with_nan, keys, k), expected), k
    assert torch.equal(scores, before)  # the caller's scores are never written to


def test_nan_in_excluded_items_on_the_candidate_path():
    g = torch.Generator().manual_seed(1)
    scores = torch.rand((4, 200), generator=g)
    exclude = [set(range(0, 60)), {5, 7}, set(), set(range(100, 180))]  # light, light, none, heavy
    for u, items in enumerate(exclude):
        for i in items:
            scores[u, i] = float("nan")
    truth = [{60, 61}, {8}, {3}, {99}]
    assert_matches_reference(scores, truth, exclude, [1, 10, 20])
    scores[1, 150] = float("nan")  # not excluded: must raise
    with pytest.raises(CrossRecError, match="NaN"):
        full_ranking(scores, to_coords(truth), to_coords(exclude), [10])


@pytest.mark.parametrize("seed", range(6))
def test_full_ranking_accepts_other_score_dtypes(seed):
    scores, truth, exclude = random_case(seed, ties=True)
    ks = [k for k in KS if k <= scores.shape[1]]
    expected, _ = full_ranking(scores, to_coords(truth), to_coords(exclude), ks)
    for dtype in (torch.float64, torch.float16, torch.int64):
        values, _ = full_ranking(scores.to(dtype), to_coords(truth), to_coords(exclude), ks)
        for key in expected:
            torch.testing.assert_close(values[key], expected[key], rtol=0, atol=TOL)


def test_float64_scores_are_not_rounded_into_ties():
    # 1 and 1 + 1e-12 are equal in float32; rounding to float32 would hand the tie to item 0
    scores = torch.tensor([[1.0, 1.0 + 1e-12, 0.0]], dtype=torch.float64)
    values, _ = full_ranking(scores, torch.tensor([[0], [1]]), None, [1])
    assert values["hit@1"].item() == 1.0
    assert topk_indices(scores, 1).tolist() == [[1]]


@pytest.mark.parametrize("seed", range(10))
def test_topk_indices_order_matches_reference(seed):
    g = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    b, n = rng.randint(1, 50), rng.randint(1, 60)
    scores = torch.randint(0, 4, (b, n), generator=g).float()
    scores[torch.rand((b, n), generator=g) < 0.2] = float("-inf")
    ranked = [ref_ranking(row, set()) for row in scores.tolist()]
    for k in range(1, n + 1):
        top = topk_indices(scores, k).tolist()
        for u in range(b):
            assert top[u] == ranked[u][:k], (u, k)


def test_tie_rule_at_the_k_boundary():
    # items 1..6 share the 3rd-best score: topk may keep any of them, the rule keeps the lowest
    scores = torch.tensor([[9.0, 5, 5, 5, 5, 5, 5, 8]])
    assert topk_indices(scores, 3).tolist() == [[0, 7, 1]]
    assert topk_indices(scores, 5).tolist() == [[0, 7, 1, 2, 3]]
    values, _ = full_ranking(scores, torch.tensor([[0], [6]]), None, [3, 8])
    assert values["hit@3"].item() == 0.0  # item 6 is tied with 1 but loses to the lower index
    assert values["mrr@8"].item() == pytest.approx(1 / 8)


def test_tie_rule_inside_the_list():
    # everything tied: the list is 0, 1, 2, ... and the relevant item 3 sits at rank 3
    scores = torch.zeros((1, 6))
    assert topk_indices(scores, 6).tolist() == [[0, 1, 2, 3, 4, 5]]
    values, _ = full_ranking(scores, torch.tensor([[0], [3]]), None, [5])
    assert values["mrr@5"].item() == pytest.approx(0.25)
    assert values["ndcg@5"].item() == pytest.approx(1 / math.log2(5))


def test_hand_example_with_ties():
    # scores 1,2,2,2,0,0 -> ranking 1,2,3,0,4,5; relevant item 3 at rank 2 (0-based)
    scores = torch.tensor([[1.0, 2, 2, 2, 0, 0]])
    values, _ = full_ranking(scores, torch.tensor([[0], [3]]), None, [2, 3])
    assert values["hit@2"].item() == 0.0
    assert values["hit@3"].item() == 1.0
    assert values["ndcg@3"].item() == pytest.approx(0.5)  # 1 / log2(4)
    assert values["mrr@3"].item() == pytest.approx(1 / 3)


# ---------------------------------------------------------------------------- hand-worked example
def test_hand_worked_example():
    # 1 user, 6 items ranked 0..5 by score, relevant items 1 and 3 (ranks 1 and 3, 0-based)
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.6, 0.5, 0.4]])
    truth = torch.tensor([[0, 0], [1, 3]])
    values, valid = full_ranking(scores, truth, None, [1, 2, 5, 6])
    assert valid.tolist() == [True]
    v = {key: t.item() for key, t in values.items()}
    expected = {
        # K=1: the list is [0], no hit
        "precision@1": 0.0, "recall@1": 0.0, "f1@1": 0.0, "ndcg@1": 0.0, "hit@1": 0.0, "mrr@1": 0.0,
        # K=2: [0, 1], one hit at rank 1; DCG = 1/log2(3) = 0.63093, IDCG = 1 + 1/log2(3) = 1.63093
        "precision@2": 0.5, "recall@2": 0.5, "f1@2": 0.5, "ndcg@2": 0.38685280723454163, "hit@2": 1.0, "mrr@2": 0.5,
        # K=5: hits at ranks 1 and 3; DCG = 1/log2(3) + 1/log2(5) = 1.06161, IDCG = 1.63093
        # P = 2/5, R = 1, F1 = 2 * 0.4 * 1 / 1.4 = 0.571429
        "precision@5": 0.4, "recall@5": 1.0, "f1@5": 0.5714285714285715, "ndcg@5": 0.6509209298071326, "hit@5": 1.0, "mrr@5": 0.5,
        # K=6 = catalogue size: same hits, P = 2/6
        "precision@6": 1 / 3, "recall@6": 1.0, "f1@6": 0.5, "ndcg@6": 0.6509209298071326, "hit@6": 1.0, "mrr@6": 0.5,
    }  # fmt: skip
    assert set(v) == set(expected)
    for key, value in expected.items():
        assert v[key] == pytest.approx(value, abs=TOL), key


def test_ranking_metrics_from_hits_directly():
    hits = torch.tensor([[0, 1, 0, 1, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    out = ranking_metrics(hits, torch.tensor([2, 3, 10]), [5])
    torch.testing.assert_close(out["precision@5"], torch.tensor([0.4, 0.0, 1.0]))
    torch.testing.assert_close(out["recall@5"], torch.tensor([1.0, 0.0, 0.5]))
    torch.testing.assert_close(out["mrr@5"], torch.tensor([0.5, 0.0, 1.0]))
    torch.testing.assert_close(out["ndcg@5"], torch.tensor([0.6509209298071326, 0.0, 1.0]))
    with pytest.raises(CrossRecError):
        ranking_metrics(hits, torch.tensor([2, 3, 10]), [6])


# ---------------------------------------------------------------------------- torchmetrics
torchmetrics_retrieval = pytest.importorskip("torchmetrics.retrieval")


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("k", KS)
def test_full_ranking_agrees_with_torchmetrics(seed, k):
    """Compare with torchmetrics only where both define the same thing.

    Where torchmetrics (1.9 here) differs from our definitions, the data avoids the difference:
    * ties: RetrievalNormalizedDCG averages the gain over tied scores (sklearn style), and the
      others follow ``torch.topk``/``argsort`` order; ours gives a tie to the lower index. So the
      scores are continuous random floats (no ties).
    * RetrievalPrecision/Recall/MRR drop a target whose score is <= 0 (``where(preds > 0, ...)``),
      so a relevant item with a non-positive score is never a hit there; ours ranks any score. So
      every score is > 0. (Same reason: no exclusions, which we express as -inf.)
    * RetrievalMRR had no cut-off in old releases (``top_k`` came later); ours is MRR@K. The
      installed version takes ``top_k`` and then cuts the list at K, as ours does.
    * RetrievalPrecision with ``adaptive_k=True`` divides by min(K, #items); ours always divides by
      K (K above the catalogue is an error). Left at the default ``adaptive_k=False``.
    * empty targets: torchmetrics' default ``empty_target_action="neg"`` scores a user without
      relevant items as 0 and keeps it in the mean; ours leaves such users out. So every user
      here has at least one relevant item.
    """
    scores, truth, _ = random_case(1000 + seed, ties=False, exclusions=False, min_relevant=1, n_items=40)
    assert scores.min() > 0 and len(torch.unique(scores)) == scores.numel()
    values, valid = full_ranking(scores, to_coords(truth), None, [k])
    assert bool(valid.all())
    b, n = scores.shape
    target = torch.zeros((b, n), dtype=torch.bool)
    coords = to_coords(truth)
    target[coords[0], coords[1]] = True
    indexes = torch.arange(b).repeat_interleave(n)
    pairs = {
        "ndcg": torchmetrics_retrieval.RetrievalNormalizedDCG(top_k=k),
        "recall": torchmetrics_retrieval.RetrievalRecall(top_k=k),
        "precision": torchmetrics_retrieval.RetrievalPrecision(top_k=k),
        "mrr": torchmetrics_retrieval.RetrievalMRR(top_k=k),
        "hit": torchmetrics_retrieval.RetrievalHitRate(top_k=k),
    }
    for name, metric in pairs.items():
        expected = metric(scores.flatten(), target.flatten(), indexes=indexes)
        assert values[f"{name}@{k}"].double().mean().item() == pytest.approx(expected.item(), abs=TOL), name


# ---------------------------------------------------------------------------- edge cases
def test_k_larger_than_catalogue_raises():
    scores = torch.rand((2, 5))
    truth = torch.tensor([[0, 1], [0, 1]])
    with pytest.raises(CrossRecError, match="larger than the catalogue"):
        full_ranking(scores, truth, None, [6])
    with pytest.raises(CrossRecError):
        full_ranking(scores, truth, None, [5, 10])
    with pytest.raises(CrossRecError):
        topk_indices(scores, 6)
    with pytest.raises(CrossRecError):
        check_ks([3, 6], 5)


@pytest.mark.parametrize("bad", [0, -1, 2.0, 2.5, "5", True, None, []])
def test_bad_k_raises(bad):
    scores = torch.rand((2, 5))
    truth = torch.tensor([[0, 1], [0, 1]])
    ks = bad if isinstance(bad, list) else [bad]
    with pytest.raises(CrossRecError):
        full_ranking(scores, truth, None, ks)
    with pytest.raises(CrossRecError):
        check_ks(ks)


def test_check_ks_sorts_and_deduplicates():
    assert check_ks([20, 5, 10, 5]) == (5, 10, 20)
    assert check_ks(10) == (10,)
    assert metric_keys((5, 10), ("ndcg", "hit")) == ["ndcg@5", "ndcg@10", "hit@5", "hit@10"]


def test_k_equal_to_catalogue_size():
    scores = torch.tensor([[0.1, 0.4, 0.3, 0.2], [1.0, 1.0, 1.0, 1.0]])
    truth = torch.tensor([[0, 1], [0, 3]])
    values, valid = full_ranking(scores, truth, None, [4])
    assert valid.tolist() == [True, True]
    # every item is in the list, so recall and hit are 1; the rank decides NDCG/MRR
    assert values["recall@4"].tolist() == [1.0, 1.0]
    assert values["precision@4"].tolist() == [0.25, 0.25]
    torch.testing.assert_close(values["mrr@4"], torch.tensor([1 / 4, 1 / 4]))
    torch.testing.assert_close(values["ndcg@4"], torch.tensor([1 / math.log2(5), 1 / math.log2(5)]))


def test_users_without_relevant_items_are_left_out():
    scores = torch.tensor([[3.0, 2, 1], [3.0, 2, 1], [3.0, 2, 1]])
    truth = torch.tensor([[0, 2], [0, 1]])  # user 1 has nothing to find
    values, valid = full_ranking(scores, truth, None, [1])
    assert valid.tolist() == [True, False, True]
    assert values["hit@1"].tolist() == [1.0, 0.0]  # users 0 and 2, in order


def test_no_relevant_items_at_all():
    values, valid = full_ranking(torch.rand((3, 4)), torch.zeros((2, 0), dtype=torch.long), None, [2])
    assert not valid.any()
    assert all(v.numel() == 0 for v in values.values())


def test_all_relevant_items_excluded():
    # The code counts |R_u| from the truth before excluding, so such a user IS evaluated (it is
    # not "without relevant items") and scores 0 everywhere: the item cannot be recommended.
    scores = torch.tensor([[5.0, 4, 3, 2, 1]])
    truth = torch.tensor([[0, 0], [0, 1]])
    exclude = torch.tensor([[0, 0], [0, 1]])
    values, valid = full_ranking(scores, truth, exclude, [1, 5])
    assert valid.tolist() == [True]
    assert all(v.tolist() == [0.0] for v in values.values())


def test_excluded_relevant_item_counts_in_recall_denominator():
    # relevant {0, 2}, 0 excluded: the list is 1,2,3 and recall is 1/2, not 1/1
    scores = torch.tensor([[9.0, 3, 2, 1]])
    values, _ = full_ranking(scores, torch.tensor([[0, 0], [0, 2]]), torch.tensor([[0], [0]]), [3])
    assert values["recall@3"].item() == pytest.approx(0.5)
    assert values["mrr@3"].item() == pytest.approx(0.5)
    assert values["ndcg@3"].item() == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))


def test_excluded_items_never_hit_even_when_k_exceeds_what_is_left():
    # 3 items, 1 excluded and relevant, K=3: the excluded item sits at the end of the list at
    # -inf, but must not count as a hit there
    scores = torch.tensor([[3.0, 2.0, 1.0]])
    values, _ = full_ranking(scores, torch.tensor([[0], [2]]), torch.tensor([[0], [2]]), [3])
    assert all(v.item() == 0.0 for v in values.values())


def test_exclusion_pushes_items_out_of_the_list():
    scores = torch.tensor([[5.0, 4, 3, 2, 1]])
    values, _ = full_ranking(scores, torch.tensor([[0], [2]]), torch.tensor([[0, 0], [0, 1]]), [1])
    assert values["hit@1"].item() == 1.0  # items 0 and 1 excluded: item 2 is first


def test_full_ranking_does_not_modify_scores():
    scores = torch.rand((3, 6))
    before = scores.clone()
    full_ranking(scores, torch.tensor([[0, 1], [0, 1]]), torch.tensor([[0, 2], [3, 4]]), [2])
    assert torch.equal(scores, before)


def test_nan_scores_raise():
    scores = torch.rand((3, 6))
    scores[1, 4] = float("nan")
    truth = torch.tensor([[0, 1, 2], [0, 1, 2]])
    with pytest.raises(CrossRecError, match="NaN"):
        full_ranking(scores, truth, None, [2])
    with pytest.raises(CrossRecError, match="NaN"):
        topk_indices(scores, 1)
    all_nan = torch.full((2, 4), float("nan"))
    with pytest.raises(CrossRecError, match="NaN"):
        topk_indices(all_nan, 4)


def test_nan_score_of_an_excluded_item_is_masked_not_raised():
    # documented behaviour of the code: exclusion replaces the score by -inf before ranking,
    # so a NaN that could never be ranked is not an error
    scores = torch.tensor([[1.0, float("nan"), 0.5]])
    values, _ = full_ranking(scores, torch.tensor([[0], [2]]), torch.tensor([[0], [1]]), [1])
    assert values["hit@1"].item() == 0.0


# ---------------------------------------------------------------------------- sampled ranking
def _sampled_case(seed=0):
    scores, truth, exclude = random_case(seed, ties=False, min_relevant=1, n_items=60)
    return scores, to_coords(truth), to_coords(exclude), truth, exclude


def test_sampled_ranking_is_deterministic():
    scores, truth, exclude, _, _ = _sampled_case()
    a, va = sampled_ranking(scores, truth, exclude, [1, 5], 20, torch.Generator().manual_seed(3))
    b, vb = sampled_ranking(scores, truth, exclude, [1, 5], 20, torch.Generator().manual_seed(3))
    c, _ = sampled_ranking(scores, truth, exclude, [1, 5], 20, torch.Generator().manual_seed(4))
    assert torch.equal(va, vb)
    for key in a:
        assert torch.equal(a[key], b[key])
    assert set(a) == {"sampled_hit@1", "sampled_hit@5", "sampled_ndcg@1", "sampled_ndcg@5"}
    assert any(not torch.equal(a[key], c[key]) for key in a)  # the seed matters


@pytest.mark.parametrize("num_negatives", [5, 30, 60])
def test_sampled_negatives_never_relevant_or_excluded(num_negatives):
    # relevant items score 10, excluded ones 20, allowed ones 0: any relevant or excluded item
    # drawn as a negative would tie with (0.5 rank) or beat the positive, pulling NDCG@1 below 1.
    # num_negatives=60 is the whole catalogue: users have fewer allowed items than that, so this
    # also covers the case where the draw must stop at the allowed items.
    _, truth, exclude, truth_sets, exclude_sets = _sampled_case(7)
    b, n = len(truth_sets), 60
    scores = torch.zeros((b, n))
    scores[exclude[0], exclude[1]] = 20.0
    scores[truth[0], truth[1]] = 10.0
    exclude_only = to_coords([e - t for e, t in zip(exclude_sets, truth_sets)])
    out, valid = sampled_ranking(scores, truth, exclude_only, [1], num_negatives, torch.Generator().manual_seed(0))
    assert bool(valid.all())
    assert out["sampled_hit@1"].tolist() == [1.0] * b
    assert out["sampled_ndcg@1"].tolist() == [1.0] * b


def test_sampled_top_scored_relevant_item_hits_at_1():
    g = torch.Generator().manual_seed(0)
    scores = torch.rand((8, 50), generator=g)
    truth = torch.stack([torch.arange(8), torch.arange(8) * 3])
    scores[truth[0], truth[1]] = 2.0
    out, valid = sampled_ranking(scores, truth, None, [1, 10], 49, g)
    assert valid.tolist() == [True] * 8
    assert out["sampled_hit@1"].tolist() == [1.0] * 8
    assert out["sampled_ndcg@1"].tolist() == [1.0] * 8


def test_sampled_ranking_averages_per_user_and_skips_empty_users():
    # user 0: item 0 on top (hit), item 1 at the bottom (no hit with all 8 other items as negatives)
    scores = torch.tensor([[9.0, -9, 1, 2, 3, 4, 5, 6, 7, 8], [0.0] * 10])
    truth = torch.tensor([[0, 0], [0, 1]])
    out, valid = sampled_ranking(scores, truth, None, [1], 8, torch.Generator().manual_seed(0))
    assert valid.tolist() == [True, False]
    assert out["sampled_hit@1"].tolist() == [0.5]


def test_sampled_ties_count_half():
    scores = torch.tensor([[1.0, 1.0, 0.0]])
    out, _ = sampled_ranking(scores, torch.tensor([[0], [0]]), None, [1], 2, torch.Generator().manual_seed(0))
    assert out["sampled_hit@1"].item() == 1.0  # rank 0.5 < 1
    assert out["sampled_ndcg@1"].item() == pytest.approx(1 / math.log2(2.5))


def test_sampled_ranking_bad_arguments():
    scores = torch.rand((2, 10))
    truth = torch.tensor([[0, 1], [0, 1]])
    with pytest.raises(CrossRecError):
        sampled_ranking(scores, truth, None, [10], 5, torch.Generator())
    with pytest.raises(CrossRecError):
        sampled_ranking(scores, truth, None, [5], 11, torch.Generator())
    with pytest.raises(CrossRecError):
        sampled_ranking(scores, truth, None, [0], 5, torch.Generator())


# ---------------------------------------------------------------------------- accumulator
def _batches(scores, truth_sets, exclude_sets, size):
    for start in range(0, scores.shape[0], size):
        stop = min(start + size, scores.shape[0])
        yield scores[start:stop], {
            "users": torch.arange(start, stop),
            "truth": to_coords(truth_sets[start:stop]),
            "exclude": to_coords(exclude_sets[start:stop]),
        }


def _big_case(seed=5, b=90):
    rng = random.Random(seed)
    g = torch.Generator().manual_seed(seed)
    n = 50
    scores = torch.randint(0, 6, (b, n), generator=g).float()
    truth = [set(rng.sample(range(n), rng.randint(0, 5))) for _ in range(b)]
    exclude = [set(rng.sample(range(n), rng.randint(0, 10))) for _ in range(b)]
    return scores, truth, exclude


@pytest.mark.parametrize("sampled", [0, 20])
def test_accumulator_batches_equal_one_big_batch(sampled):
    scores, truth, exclude = _big_case()
    whole = RankingAccumulator((1, 5, 10), sampled_negatives=sampled)
    for s, batch in _batches(scores, truth, exclude, len(scores)):
        whole.update(s, batch)
    parts = RankingAccumulator((1, 5, 10))
    for s, batch in _batches(scores, truth, exclude, 17):
        parts.update(s, batch)
    a, b = whole.compute(), parts.compute()
    for key in metric_keys((1, 5, 10)):
        assert a[key].item() == pytest.approx(b[key].item(), abs=TOL), key
    # and both equal the brute-force mean over users with relevant items
    ref, _ = ref_batch(scores, truth, exclude, (1, 5, 10))
    for key, values in ref.items():
        assert a[key].item() == pytest.approx(sum(values) / len(values), abs=TOL), key
    assert int(whole.count) == sum(1 for t in truth if t)
    if sampled:
        assert {"sampled_hit@1", "sampled_ndcg@10"} <= set(a)


def test_accumulator_sampled_is_reproducible():
    scores, truth, exclude = _big_case()
    results = []
    for _ in range(2):
        acc = RankingAccumulator((5,), sampled_negatives=20, seed=11)
        for s, batch in _batches(scores, truth, exclude, 30):
            acc.update(s, batch)
        results.append(acc.compute())
    assert results[0] == results[1]


def test_accumulator_per_user_frame():
    scores, truth, exclude = _big_case()
    acc = RankingAccumulator((5, 10), keep_per_user=True, sampled_negatives=20)
    order = torch.randperm(len(scores), generator=torch.Generator().manual_seed(0))
    # feed users in a scrambled order: the frame still comes out sorted by user
    for start in range(0, len(order), 25):
        idx = order[start : start + 25]
        acc.update(scores[idx], {"users": idx, "truth": to_coords([truth[i] for i in idx]), "exclude": to_coords([exclude[i] for i in idx])})
    frame = acc.per_user()
    means = acc.compute()
    assert list(frame.columns) == ["user", *acc.keys]
    assert frame["user"].tolist() == [u for u in range(len(truth)) if truth[u]]
    for key in acc.keys:
        assert frame[key].mean() == pytest.approx(means[key].item(), abs=TOL), key
    ref, _ = ref_batch(scores, truth, exclude, (5, 10))
    np.testing.assert_allclose(frame["ndcg@10"].to_numpy(), ref["ndcg@10"], atol=TOL)


def test_per_user_needs_keep_per_user():
    with pytest.raises(RuntimeError):
        RankingAccumulator((5,)).per_user()


def test_accumulator_reset():
    scores, truth, exclude = _big_case()
    fresh = RankingAccumulator((5,), keep_per_user=True)
    for s, batch in _batches(scores[:30], truth[:30], exclude[:30], 30):
        fresh.update(s, batch)
    expected = fresh.compute()

    acc = RankingAccumulator((5,), keep_per_user=True)
    for s, batch in _batches(scores[30:], truth[30:], exclude[30:], 20):
        acc.update(s, batch)
    acc.update_ratings(torch.tensor([1.0, 2.0]), torch.tensor([3.0, 3.0]), torch.tensor([0, 1]))
    acc.compute()
    acc.reset()
    assert float(acc.count) == 0.0 and float(acc.sums.abs().sum()) == 0.0
    assert float(acc.rating_count) == 0.0
    for s, batch in _batches(scores[:30], truth[:30], exclude[:30], 7):
        acc.update(s, batch)
    got = acc.compute()
    assert set(got) == set(expected)  # no leftover mae/rmse
    for key in expected:
        assert got[key].item() == pytest.approx(expected[key].item(), abs=TOL)
    assert len(acc.per_user()) == len(fresh.per_user())


def test_rating_errors_hand_example():
    # errors -1, 0, -2, 0.5: MAE = 3.5 / 4 = 0.875, RMSE = sqrt((1 + 0 + 4 + 0.25) / 4) = sqrt(1.3125)
    pred, target = torch.tensor([1.0, 2.0, 3.0, 4.5]), torch.tensor([2.0, 2.0, 5.0, 4.0])
    err = rating_errors(pred, target)
    assert err["abs_error"].tolist() == [1.0, 0.0, 2.0, 0.5]
    assert err["sq_error"].tolist() == [1.0, 0.0, 4.0, 0.25]
    acc = RankingAccumulator((5,))
    # ratings only (a rating-prediction dataset): no ranking keys, and no "compute before update"
    # warning, which pyproject turns into an error
    acc.update_ratings(pred[:2], target[:2])
    acc.update_ratings(pred[2:], target[2:])
    out = acc.compute()
    assert set(out) == {"mae", "rmse"}
    assert out["mae"].item() == pytest.approx(0.875)
    assert out["rmse"].item() == pytest.approx(math.sqrt(1.3125))


def test_per_user_rating_errors_weigh_users_and_need_the_users():
    acc = RankingAccumulator((5,), keep_per_user=True)
    # user 7: errors 1 and 3 (MAE 2, RMSE sqrt(5)); user 2: error 0.5
    acc.update_ratings(torch.tensor([2.0, 4.0]), torch.tensor([3.0, 1.0]), torch.tensor([7, 7]))
    acc.update_ratings(torch.tensor([4.5]), torch.tensor([4.0]), torch.tensor([2]))
    per = acc.per_user().set_index("user")
    assert per.index.tolist() == [2, 7]
    assert per.loc[7, "mae"] == pytest.approx(2.0) and per.loc[7, "rmse"] == pytest.approx(math.sqrt(5.0))
    assert per.loc[2, "mae"] == pytest.approx(0.5) and per.loc[2, "rmse"] == pytest.approx(0.5)
    assert acc.compute()["mae"].item() == pytest.approx(4.5 / 3)  # the overall mean weighs pairs
    with pytest.raises(ValueError, match="users="):
        acc.update_ratings(torch.tensor([1.0]), torch.tensor([2.0]))


def test_rating_update_after_compute_is_not_hidden_by_the_cache():
    acc = RankingAccumulator((5,))
    acc.update_ratings(torch.tensor([1.0]), torch.tensor([2.0]))
    assert acc.compute()["mae"].item() == pytest.approx(1.0)
    acc.update_ratings(torch.tensor([1.0]), torch.tensor([5.0]))
    assert acc.compute()["mae"].item() == pytest.approx(2.5)


def test_accumulator_keys():
    acc = RankingAccumulator((10, 5), sampled_negatives=10)
    assert acc.ks == (5, 10)
    assert acc.keys == metric_keys((5, 10)) + metric_keys((5, 10), ("sampled_hit", "sampled_ndcg"))
    assert set(METRIC_NAMES) == {"precision", "recall", "f1", "ndcg", "hit", "mrr"}


# ---------------------------------------------------------------------------- evaluate()
class FixedScores:
    """A model without a Trainer: fixed scores per user, no eval()/train()."""

    def __init__(self, scores: torch.Tensor):
        self.scores = scores
        self.calls = 0

    def full_scores(self, users: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.scores[users]


class FixedScoresModule(torch.nn.Module):
    def __init__(self, scores: torch.Tensor):
        super().__init__()
        self.register_buffer("scores", scores)
        self.modes: list[bool] = []

    def full_scores(self, users: torch.Tensor) -> torch.Tensor:
        self.modes.append(self.training)
        return self.scores[users]


def _csr(sets: list[set[int]], n: int) -> sp.csr_matrix:
    rows = [u for u, items in enumerate(sets) for _ in items]
    cols = [i for items in sets for i in sorted(items)]
    return sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(len(sets), n))


@pytest.mark.parametrize("batch_size", [1, 7, 1000])
def test_evaluate_with_eval_batches(batch_size):
    scores, truth, exclude = _big_case(seed=9, b=40)
    n = scores.shape[1]
    users = np.arange(0, 40, 2)[::-1].copy()  # a subset, in an unusual order
    loader = EvalBatches(users, _csr(truth, n), _csr(exclude, n), batch_size=batch_size)
    model = FixedScores(scores)
    means, frame = evaluate(model, loader, ks=(5, 10), keep_per_user=True)
    assert model.calls == len(loader)
    sub = [int(u) for u in users]
    ref, _ = ref_batch(scores[sub], [truth[u] for u in sub], [exclude[u] for u in sub], (5, 10))
    assert set(means) == set(metric_keys((5, 10)))
    for key, values in ref.items():
        assert means[key] == pytest.approx(sum(values) / len(values), abs=TOL), key
        assert isinstance(means[key], float)
    assert frame["user"].tolist() == sorted(u for u in sub if truth[u])
    ref_by_user = {u: v for u, v in zip([u for u in sub if truth[u]], ref["ndcg@10"])}
    np.testing.assert_allclose(frame["ndcg@10"].to_numpy(), [ref_by_user[u] for u in frame["user"]], atol=TOL)


def test_evaluate_without_per_user_and_restores_training_mode():
    scores, truth, exclude = _big_case(seed=2, b=12)
    n = scores.shape[1]
    model = FixedScoresModule(scores)
    model.train()
    loader = EvalBatches(np.arange(12), _csr(truth, n), None, batch_size=5)
    means, frame = evaluate(model, loader, ks=(3,))
    assert frame is None
    assert model.modes == [False, False, False]  # scored in eval mode
    assert model.training  # and put back
    ref, _ = ref_batch(scores, truth, [set()] * 12, (3,))
    assert means["ndcg@3"] == pytest.approx(sum(ref["ndcg@3"]) / len(ref["ndcg@3"]), abs=TOL)


def test_evaluate_rejects_k_above_catalogue():
    scores = torch.rand((3, 4))
    loader = EvalBatches(np.arange(3), _csr([{0}, {1}, {2}], 4), None, batch_size=2)
    with pytest.raises(CrossRecError):
        evaluate(FixedScores(scores), loader, ks=(5,))
