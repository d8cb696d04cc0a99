"""Top-K ranking metrics and rating errors, as batched tensor operations.

Definitions (per user u with relevant set R_u, top-K list L_u, hit_r = 1 if L_u[r] in R_u)::

    Precision@K = |L_u ∩ R_u| / K
    Recall@K    = |L_u ∩ R_u| / |R_u|
    F1@K        = 2 P R / (P + R), 0 when both are 0
    HitRate@K   = 1 if |L_u ∩ R_u| > 0
    NDCG@K      = sum_r hit_r / log2(r + 2)  /  sum_{r < min(|R_u|, K)} 1 / log2(r + 2)
    MRR@K       = 1 / (rank of the first hit + 1), 0 without a hit

Users with no relevant item are left out of every average (they cannot be evaluated), and
asking for K larger than the catalogue is an error rather than a silent clamp. Ties in scores are
broken in favour of the lower item index, so results never depend on ``torch.topk``'s internal
order (Popularity, for one, produces many ties).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from crossrec_lit.errors import CrossRecError

METRIC_NAMES = ("precision", "recall", "f1", "ndcg", "hit", "mrr")


def check_ks(ks: Sequence[int] | int, num_items: int | None = None) -> tuple[int, ...]:
    """Validate cut-offs: positive integers, none above the catalogue size."""
    ks = (ks,) if isinstance(ks, int) else tuple(ks)
    if not ks:
        raise CrossRecError("no cut-off K given", "pass e.g. ks=(10, 20)")
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
            raise CrossRecError(f"K must be a positive integer, got {k!r}", "use cut-offs such as 5, 10 or 20")
        if num_items is not None and k > num_items:
            raise CrossRecError(
                f"K={k} is larger than the catalogue of {num_items} items",
                f"use K <= {num_items}",
            )
    return tuple(sorted(set(ks)))


def metric_keys(ks: Sequence[int], names: Sequence[str] = METRIC_NAMES) -> list[str]:
    return [f"{name}@{k}" for name in names for k in ks]


_NAN_PROBLEM = "the model produced NaN scores"
_NAN_FIX = "lower the learning rate or add regularisation; check the input data"


def topk_indices(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` highest scores per row, ties to the lower index, best first."""
    n = scores.shape[1]
    if k > n:
        raise CrossRecError(f"K={k} is larger than the catalogue of {n} items", f"use K <= {n}")
    # one extra place: a tie straddles the K boundary exactly when the (K+1)-th best score equals
    # the K-th (everything outside the top K scores <= the K-th; the best of it is the (K+1)-th)
    vals, idx = torch.topk(scores, min(k + 1, n), dim=1)
    if torch.isnan(vals).any():
        # topk ranks NaN above everything, so any NaN in a row shows up here
        raise CrossRecError(_NAN_PROBLEM, _NAN_FIX)
    if k < n:
        straddle = vals[:, k - 1] == vals[:, k]
        vals, idx = vals[:, :k], idx[:, :k]
        if straddle.any():
            idx = _fix_boundary_ties(scores, vals, idx, straddle)
    return _order_ties(vals, idx)


def _order_ties(vals: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Reorder a top-K by (score desc, index asc)."""
    idx_sorted, perm = idx.sort(dim=1)
    order = vals.gather(1, perm).sort(dim=1, descending=True, stable=True)[1]
    return idx_sorted.gather(1, order)


def _fix_boundary_ties(
    scores: torch.Tensor, vals: torch.Tensor, idx: torch.Tensor, straddle: torch.Tensor, exclude_keys: torch.Tensor | None = None
) -> torch.Tensor:
    """Give the tied places of a best-first top-K to the lowest-index tied items.

    ``vals``/``idx`` [B, K] are a top-K, best first, with exact values; in a ``straddle`` row the
    K-th value v is shared with some item outside the list, and topk may have kept any of the tied
    items. The places holding scores above v are right; the rest go to the eligible items scoring
    exactly v (not in ``exclude_keys``, row * N + col keys), lowest index first. One comparison
    pass over the rows plus a ``nonzero``: no sort of the catalogue.
    """
    b, n = scores.shape
    k = vals.shape[1]
    rows = straddle.nonzero(as_tuple=True)[0]
    tie = vals[rows, k - 1]
    if 4 * len(rows) < b:
        local = torch.full((b,), -1, dtype=torch.long, device=scores.device)
        local[rows] = torch.arange(len(rows), device=scores.device)
        eq = scores[rows] == tie.unsqueeze(1)
    else:
        # most rows tie: compare the whole batch (no float copy); other rows compare with NaN
        local = torch.arange(b, device=scores.device)
        target = torch.full((b, 1), float("nan"), dtype=scores.dtype, device=scores.device)
        target[rows, 0] = tie
        eq = scores == target
    if exclude_keys is not None and exclude_keys.numel():
        r = local[exclude_keys // n]
        keep = r >= 0
        eq[r[keep], exclude_keys[keep] % n] = False
    above = (vals[rows] > tie.unsqueeze(1)).sum(1, keepdim=True)
    width = k - int(above.min())
    tied = _first_true(eq, width)[local[rows]]
    place = torch.arange(k, device=scores.device).expand(len(rows), k)
    take = (place - above).clamp(min=0, max=width - 1)
    idx = idx.clone()
    idx[rows] = torch.where(place >= above, tied.gather(1, take), idx[rows])
    return idx


def _first_true(mask: torch.Tensor, width: int) -> torch.Tensor:
    """Column indices of the first ``width`` True entries of each row of ``mask`` (0 past the last)."""
    r, c = mask.nonzero(as_tuple=True)  # row-major: within a row, columns come in order
    counts = torch.bincount(r, minlength=mask.shape[0])
    rank = torch.arange(len(r), device=mask.device) - (counts.cumsum(0) - counts)[r]
    keep = rank < width
    out = torch.zeros((mask.shape[0], width), dtype=torch.long, device=mask.device)
    out[r[keep], rank[keep]] = c[keep]
    return out


def ranking_metrics(hits: torch.Tensor, num_relevant: torch.Tensor, ks: Sequence[int]) -> dict[str, torch.Tensor]:
    """Per-user metric values from a [B, Kmax] hit matrix (best first) and relevant-set sizes."""
    hits = hits.float()
    kmax = hits.shape[1]
    n_rel = num_relevant.float()
    ranks = torch.arange(kmax, dtype=torch.float32, device=hits.device)
    discount = 1.0 / torch.log2(ranks + 2.0)
    ideal_cum = torch.cumsum(discount, 0)
    first_hit = torch.where(hits.any(1), hits.argmax(1), torch.full_like(n_rel, -1, dtype=torch.long))
    out: dict[str, torch.Tensor] = {}
    for k in ks:
        if k > kmax:
            raise CrossRecError(f"K={k} exceeds the {kmax} ranked items", "rank at least max(ks) items")
        n_hit = hits[:, :k].sum(1)
        precision = n_hit / k
        recall = torch.where(n_rel > 0, n_hit / n_rel.clamp(min=1), torch.zeros_like(n_hit))
        denom = precision + recall
        f1 = torch.where(denom > 0, 2 * precision * recall / denom.clamp(min=1e-12), torch.zeros_like(denom))
        dcg = (hits[:, :k] * discount[:k]).sum(1)
        ideal_len = torch.clamp(n_rel, max=k).long()
        idcg = torch.where(ideal_len > 0, ideal_cum[(ideal_len - 1).clamp(min=0)], torch.ones_like(dcg))
        mrr = torch.where((first_hit >= 0) & (first_hit < k), 1.0 / (first_hit.float() + 1.0), torch.zeros_like(dcg))
        out[f"precision@{k}"] = precision
        out[f"recall@{k}"] = recall
        out[f"f1@{k}"] = f1
        out[f"ndcg@{k}"] = dcg / idcg
        out[f"hit@{k}"] = (n_hit > 0).float()
        out[f"mrr@{k}"] = mrr
    return out


# rows with more excluded items than this are ranked on a masked copy rather than from candidates
_MAX_CANDIDATE_EXCLUSIONS = 64


def _masked_topk(scores: torch.Tensor, exclude_keys: torch.Tensor | None, k: int) -> torch.Tensor:
    """``topk_indices(scores with the excluded entries set to -inf, k)``, without copying ``scores``.

    ``exclude_keys`` are sorted unique ``row * N + col`` keys. Copying the [B, N] score matrix to
    write the -inf took as long as the ranking itself, so instead, for a row with e excluded items:
    the top ``K + 1 + e`` unmasked scores hold at least K + 1 non-excluded items, and the best K + 1
    of those, after masking, are exactly the K + 1 best masked scores (every item outside the
    candidates scores no higher than all of them). When the K-th and (K+1)-th of those differ, the
    top-K set is unique and complete; when they are equal (a tie across the K boundary), the tied
    places go to the lowest-index eligible items (one comparison pass). A row that excludes too
    many items (or ties at -inf) is ranked the plain way, on a masked copy of that row.
    A NaN at an excluded position is masked, as on the plain path, and any other NaN is raised.
    """
    b, n = scores.shape
    if exclude_keys is None or exclude_keys.numel() == 0:
        return topk_indices(scores, k)
    n_excluded = torch.bincount(exclude_keys // n, minlength=b)
    heavy = n_excluded > _MAX_CANDIDATE_EXCLUSIONS
    light_max = int(n_excluded.masked_fill(heavy, 0).max()) if b else 0
    n_cand = k + 1 + light_max
    if n_cand > n or bool(heavy.all()):
        # small catalogue, or nothing to gain: the plain way on a masked copy of every row
        return _topk_masked_rows(scores, exclude_keys, k, torch.arange(b, device=scores.device))
    vals, idx = torch.topk(scores, n_cand, dim=1)
    row_base = torch.arange(b, device=scores.device).unsqueeze(1) * n
    vals = vals.masked_fill(torch.isin(idx + row_base, exclude_keys), float("-inf"))
    best_vals, pos = torch.topk(vals, k + 1, dim=1)
    if torch.isnan(best_vals).any():
        raise CrossRecError(_NAN_PROBLEM, _NAN_FIX)
    top_vals, top = best_vals[:, :k], idx.gather(1, pos[:, :k])
    straddle = best_vals[:, k - 1] == best_vals[:, k]
    # a tie at -inf would include the excluded items themselves: rank such rows on a masked copy
    copy_rows = heavy | (straddle & (best_vals[:, k - 1] == float("-inf")))
    straddle &= ~copy_rows
    if straddle.any():
        top = _fix_boundary_ties(scores, top_vals, top, straddle, exclude_keys)
    top = _order_ties(top_vals, top)
    if copy_rows.any():
        rows = copy_rows.nonzero(as_tuple=True)[0]
        top[rows] = _topk_masked_rows(scores, exclude_keys, k, rows)
    return top


def _topk_masked_rows(scores: torch.Tensor, exclude_keys: torch.Tensor, k: int, rows: torch.Tensor) -> torch.Tensor:
    """topk_indices of ``scores[rows]`` (a copy) with the excluded entries of those rows at -inf."""
    n = scores.shape[1]
    sub = scores[rows]  # advanced indexing: a copy, the caller's scores stay untouched
    new_row = torch.full((scores.shape[0],), -1, dtype=torch.long, device=scores.device)
    new_row[rows] = torch.arange(len(rows), device=scores.device)
    r, c = new_row[exclude_keys // n], exclude_keys % n
    keep = r >= 0
    sub[r[keep], c[keep]] = float("-inf")
    return topk_indices(sub, k)


def full_ranking(
    scores: torch.Tensor,
    truth: torch.Tensor,
    exclude: torch.Tensor | None,
    ks: Sequence[int],
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Rank ALL items for a batch of users and score the top-K.

    ``scores`` is [B, N]; ``truth`` and ``exclude`` are [2, nnz] (row, col) coordinates. Excluded
    items get -inf so they can never take a place in the list. Returns the per-user metrics of
    the users that have at least one relevant item, and the boolean mask of those users.
    """
    ks = check_ks(ks, scores.shape[1])
    b, n = scores.shape
    # float32 at least, but never narrower than given: float64 -> float32 would create new ties.
    # No copy when already float: _masked_topk never writes into ``scores``.
    scores = scores.to(torch.promote_types(scores.dtype, torch.float32))
    truth = truth.to(device=scores.device, dtype=torch.long)
    exclude_keys = None
    if exclude is not None and exclude.numel() > 0:
        exclude = exclude.to(device=scores.device, dtype=torch.long)
        exclude_keys = torch.unique(exclude[0] * n + exclude[1])
    top = _masked_topk(scores, exclude_keys, max(ks))
    # relevance as sorted, de-duplicated row * N + col keys: no dense [B, N] mask (summing a
    # [B, N] bool mask casts it to int64, which cost more than the ranking itself)
    truth_keys = torch.unique(truth[0] * n + truth[1])
    # |R_u| counts every truth item, excluded or not (an excluded relevant item is simply a miss)
    n_rel = torch.bincount(truth_keys // n, minlength=b)
    if exclude_keys is not None:
        # when K exceeds the items left to rank, -inf (excluded) items fill the tail of the list;
        # they must never count as hits there
        truth_keys = truth_keys[~torch.isin(truth_keys, exclude_keys)]
    row_base = torch.arange(b, device=scores.device).unsqueeze(1) * n
    hits = torch.isin(top + row_base, truth_keys)
    valid = n_rel > 0
    values = ranking_metrics(hits[valid], n_rel[valid], ks)
    return values, valid


def sampled_ranking(
    scores: torch.Tensor,
    truth: torch.Tensor,
    exclude: torch.Tensor | None,
    ks: Sequence[int],
    num_negatives: int,
    generator: torch.Generator,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """SAMPLED-negative HitRate/NDCG: each relevant item ranked against ``num_negatives`` random items.

    Reported only under ``sampled_`` names: Krichene & Rendle (KDD 2020) showed such metrics can
    order models differently from full ranking, so they are an explicit extra, never the default.
    Negatives are drawn uniformly from items that are neither relevant nor excluded; a user with
    fewer such items than ``num_negatives`` is ranked against all of them.
    """
    ks = check_ks(ks)
    if num_negatives < max(ks):
        raise CrossRecError(f"{num_negatives} sampled negatives cannot support K={max(ks)}", "sample at least max(ks) negatives")
    b, n = scores.shape
    if num_negatives > n:
        raise CrossRecError(f"{num_negatives} sampled negatives exceed the catalogue of {n} items", f"sample at most {n} negatives")
    blocked = torch.zeros((b, n), dtype=torch.bool)
    blocked[truth[0], truth[1]] = True
    if exclude is not None and exclude.numel():
        blocked[exclude[0], exclude[1]] = True
    # Gumbel-free sampling without replacement among allowed items: random keys, blocked ones last
    keys = torch.rand((b, n), generator=generator)
    keys[blocked] = 2.0
    neg = keys.topk(num_negatives, dim=1, largest=False).indices
    # a user with fewer allowed items than num_negatives gets blocked ones too: drop those
    neg_ok = ~blocked.gather(1, neg)
    neg_scores = scores.gather(1, neg)
    rows, cols = truth[0], truth[1]
    pos_scores = scores[rows, cols]
    # rank of a relevant item = negatives scoring strictly higher, plus half the ties
    higher = ((neg_scores[rows] > pos_scores[:, None]) & neg_ok[rows]).sum(1).float()
    ties = ((neg_scores[rows] == pos_scores[:, None]) & neg_ok[rows]).sum(1).float()
    rank = higher + 0.5 * ties
    per_item = {}
    for k in ks:
        per_item[f"sampled_hit@{k}"] = (rank < k).float()
        per_item[f"sampled_ndcg@{k}"] = torch.where(rank < k, 1.0 / torch.log2(rank + 2.0), torch.zeros_like(rank))
    counts = torch.bincount(rows, minlength=b).float()
    valid = counts > 0
    out = {name: torch.zeros(b).index_add_(0, rows, v)[valid] / counts[valid] for name, v in per_item.items()}
    return out, valid


def rating_errors(pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """Absolute and squared errors per rating (aggregate as ``MAE = mean |e|``, ``RMSE = sqrt(mean e^2)``)."""
    err = pred.float() - target.float()
    return {"abs_error": err.abs(), "sq_error": err.square()}
