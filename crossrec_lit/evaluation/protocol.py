"""Accumulating evaluation over batches (and DDP ranks), and evaluation without a Trainer.

:class:`RankingAccumulator` is a torchmetrics ``Metric`` so that Lightning resets it per epoch
and torchmetrics sums it across DDP ranks: the mean over users is then exactly the mean one
process would compute. It can also keep every user's value, which the experiment runner needs
for paired significance tests.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch
from torchmetrics import Metric

from crossrec_lit.evaluation.metrics import METRIC_NAMES, check_ks, full_ranking, metric_keys, rating_errors, sampled_ranking


class RankingAccumulator(Metric):
    """Sums of per-user ranking metrics (and optionally the per-user values themselves)."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, ks: Sequence[int] = (10, 20), keep_per_user: bool = False, sampled_negatives: int = 0, seed: int = 0):
        super().__init__()
        self.ks = check_ks(ks)
        self.keep_per_user = keep_per_user
        self.sampled_negatives = int(sampled_negatives)
        self.seed = seed
        self.keys = metric_keys(self.ks)
        if self.sampled_negatives:
            self.keys += metric_keys(self.ks, ("sampled_hit", "sampled_ndcg"))
        self.add_state("sums", default=torch.zeros(len(self.keys), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("rating_abs", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("rating_sq", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("rating_count", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        if keep_per_user:
            self.add_state("user_ids", default=[], dist_reduce_fx="cat")
            self.add_state("user_values", default=[], dist_reduce_fx="cat")
            # one row per rated test pair (user, |error|, error^2): per-user MAE/RMSE for paired tests
            self.add_state("rating_users", default=[], dist_reduce_fx="cat")
            self.add_state("rating_errors", default=[], dist_reduce_fx="cat")
        self._batches = 0

    def update(self, scores: torch.Tensor, batch: dict[str, torch.Tensor]) -> None:  # type: ignore[override]
        values, valid = full_ranking(scores, batch["truth"], batch.get("exclude"), self.ks)
        if self.sampled_negatives:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self._batches)
            sampled, _ = sampled_ranking(scores.cpu(), batch["truth"].cpu(), _cpu(batch.get("exclude")), self.ks, self.sampled_negatives, g)
            values.update({k: v.to(scores.device) for k, v in sampled.items()})
        self._batches += 1
        stacked = torch.stack([values[k].double() for k in self.keys], dim=1)
        self.sums += stacked.sum(0)
        self.count += stacked.shape[0]
        if self.keep_per_user:
            self.user_ids.append(batch["users"][valid.to(batch["users"].device)].to(scores.device))
            self.user_values.append(stacked)

    def update_ratings(self, pred: torch.Tensor, target: torch.Tensor, users: torch.Tensor | None = None) -> None:
        """Add rating predictions; ``users`` (one per prediction) is needed to keep per-user values."""
        # torchmetrics only wraps ``update``; do what its wrapper does, or compute() would return
        # a stale cached value after this call (and warn "called before update" for rating-only data)
        self._computed = None
        self._update_count += 1
        err = rating_errors(pred, target)
        self.rating_abs += err["abs_error"].double().sum()
        self.rating_sq += err["sq_error"].double().sum()
        self.rating_count += float(target.numel())
        if self.keep_per_user:
            if users is None:
                raise ValueError("keep_per_user=True needs the user of every rating prediction (users=)")
            self.rating_users.append(users.to(pred.device))
            self.rating_errors.append(torch.stack([err["abs_error"].double(), err["sq_error"].double()], dim=1))

    def compute(self) -> dict[str, torch.Tensor]:  # type: ignore[override]
        out = {}
        if self.count > 0:
            means = self.sums / self.count
            out = {k: means[i].float() for i, k in enumerate(self.keys)}
        if self.rating_count > 0:
            out["mae"] = (self.rating_abs / self.rating_count).float()
            out["rmse"] = torch.sqrt(self.rating_sq / self.rating_count).float()
        return out

    def per_user(self) -> pd.DataFrame:
        """One row per evaluated user: ``user`` (index) and one column per metric; with ratings also
        ``mae`` and ``rmse`` over that user's rated pairs (the means of :meth:`compute` weigh pairs,
        these weigh users, as the ranking metrics do)."""
        if not self.keep_per_user:
            raise RuntimeError("per-user values were not kept; create the accumulator with keep_per_user=True")
        users = _cat(self.user_ids, torch.long)
        values = _cat(self.user_values, torch.float64).reshape(-1, len(self.keys))
        frame = pd.DataFrame(values.cpu().numpy(), columns=self.keys)
        frame.insert(0, "user", users.cpu().numpy())
        rated = _cat(self.rating_users, torch.long)
        if rated.numel():
            errors = _cat(self.rating_errors, torch.float64).reshape(-1, 2).cpu().numpy()
            per = pd.DataFrame({"user": rated.cpu().numpy(), "mae": errors[:, 0], "rmse": errors[:, 1]}).groupby("user").mean()
            per["rmse"] = per["rmse"] ** 0.5
            frame = frame.merge(per.reset_index(), on="user", how="outer")
        return frame.sort_values("user", kind="stable").reset_index(drop=True)

    def reset(self) -> None:
        super().reset()
        self._batches = 0


def _cat(state, dtype) -> torch.Tensor:
    if isinstance(state, torch.Tensor):
        return state
    return torch.cat(state) if state else torch.zeros(0, dtype=dtype)


def _cpu(t):
    return None if t is None else t.cpu()


@torch.no_grad()
def evaluate(model, loader, *, ks: Sequence[int] = (10, 20), keep_per_user: bool = False) -> tuple[dict[str, float], pd.DataFrame | None]:
    """Evaluate a recommender over an evaluation loader without a Trainer.

    ``model`` needs ``full_scores(users)``; ``loader`` yields the batches of
    :class:`crossrec_lit.data.sampling.EvalBatches`. Returns the mean metrics and, with
    ``keep_per_user``, the per-user table.
    """
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    acc = RankingAccumulator(ks, keep_per_user=keep_per_user)
    for batch in loader:
        acc.update(model.full_scores(batch["users"]), batch)
    if was_training:
        model.train()
    means = {k: float(v) for k, v in acc.compute().items()}
    return means, (acc.per_user() if keep_per_user else None)


__all__ = ["METRIC_NAMES", "RankingAccumulator", "evaluate"]
