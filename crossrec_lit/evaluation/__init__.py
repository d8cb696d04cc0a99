"""Full-ranking evaluation: metrics, accumulation across batches and ranks."""

from crossrec_lit.evaluation.metrics import METRIC_NAMES, check_ks, full_ranking, ranking_metrics, rating_errors, sampled_ranking, topk_indices
from crossrec_lit.evaluation.protocol import RankingAccumulator, evaluate

__all__ = [
    "METRIC_NAMES",
    "RankingAccumulator",
    "check_ks",
    "evaluate",
    "full_ranking",
    "ranking_metrics",
    "rating_errors",
    "sampled_ranking",
    "topk_indices",
]
