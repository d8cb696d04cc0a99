"""Our full-ranking evaluator against RecBole 1.2.1's, on one score matrix.

RecBole runs in its own venv (``.venv-recbole`` at the repository root, or the python named by
``CROSSREC_RECBOLE_PYTHON``), created by ``python benchmarks/peer_recbole.py``; the package never
imports it. The same random scores (continuous, no ties), relevant items and masked items go
through RecBole's Collector/Evaluator and metric classes (``benchmarks/_recbole_side.py``, in a
subprocess) and through ``crossrec_lit.evaluation.full_ranking``; NDCG, Recall, MRR, Hit and
Precision at K = 1, 5, 10, 20 must agree to 1e-6, per user and in the mean.

Definitions, checked in recbole/evaluator/metrics.py (1.2.1): Recall@K = hits / |R| (not
hits / min(|R|, K)); NDCG@K divides by the ideal DCG of min(|R|, K) hits; MRR@K = 1 / rank of the
first hit within K; users are averaged with equal weight. They are ours too. What differs is
outside these metrics: RecBole breaks score ties by ``torch.topk`` order (unspecified), ours by
the lower item index, so the comparison uses scores without ties; and RecBole never masks a
relevant item (its mask is the user's earlier items minus the evaluated ones), so the
cross-check's masked items are disjoint from the relevant ones.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
SKIP_REASON = "RecBole venv not found: run python benchmarks/peer_recbole.py once to create it"


def _peer():
    spec = importlib.util.spec_from_file_location("peer_recbole", ROOT / "benchmarks" / "peer_recbole.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def peer():
    return _peer()


@pytest.fixture(scope="module")
def recbole_python(peer):
    python = peer.find_recbole_python(ROOT / ".venv-recbole")
    if python is None:
        pytest.skip(SKIP_REASON)
    return python


@pytest.fixture(scope="module")
def crosscheck(peer, recbole_python):
    return peer.run_crosscheck(recbole_python, n_users=500, n_items=2000, seed=0)


@pytest.mark.slow
def test_recbole_and_ours_agree(crosscheck):
    rows = {key: row for key, *row in crosscheck["rows"]}
    for key in ("ndcg@10", "recall@10", "mrr@10"):
        assert key in rows
    bad = {key: (r_mean, o_mean, d_mean, d_user) for key, (r_mean, o_mean, d_mean, d_user) in rows.items() if max(d_mean, d_user) > 1e-6}
    assert not bad, f"RecBole and crossrec_lit disagree: {bad}"
    # the data is not degenerate: hits happen at every cut-off, and more than one item is relevant for some
    assert 0.05 < rows["ndcg@10"][0] < 0.95 and rows["recall@1"][0] < rows["hit@1"][0]


@pytest.mark.slow
def test_crosscheck_has_teeth(peer, crosscheck):
    """Ignoring the mask, or Recall over min(|R|, K), would be caught: both move the values by far more than 1e-6."""
    data = peer.make_crosscheck_data(500, 2000, seed=0)
    recbole = {key: r_mean for key, r_mean, *_ in crosscheck["rows"]}
    unmasked = peer.ours_on_crosscheck({**data, "exclude_rows": data["exclude_rows"][:0], "exclude_cols": data["exclude_cols"][:0]})
    assert abs(unmasked["ndcg@10"].mean() - recbole["ndcg@10"]) > 1e-2
    ours = peer.ours_on_crosscheck(data)
    n_rel = np.bincount(data["truth_rows"], minlength=500)
    recall_min = ours["recall@10"] * n_rel / np.minimum(n_rel, 10)
    assert abs(recall_min.mean() - recbole["recall@10"]) > 1e-3


def test_skip_reason_names_the_fix(peer, tmp_path, monkeypatch):
    """Without a RecBole venv the cross-check is skipped, and the reason says how to create one."""
    monkeypatch.delenv(peer.ENV_PYTHON, raising=False)
    assert peer.find_recbole_python(tmp_path / "no-venv") is None
    monkeypatch.setenv(peer.ENV_PYTHON, str(tmp_path / "missing-python"))
    assert peer.find_recbole_python() is None
    assert "python benchmarks/peer_recbole.py" in SKIP_REASON
