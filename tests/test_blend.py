"""BlendRanker: fitting on a held-out training slice, single-signal equivalence with the counting
baselines, quality against the best simple signal, no look at validation/test, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import quiet_trainer
from crossrec_lit import CrossRecError
from crossrec_lit.data import CrossDomainDataModule, InteractionDataModule, Synthetic
from crossrec_lit.evaluation.metrics import topk_indices
from crossrec_lit.features import HashingTfidfEncoder
from crossrec_lit.features.cache import encode_domains
from crossrec_lit.models.base import RecommenderModule
from crossrec_lit.models.baselines import CrossDomainCooccurrence, OverlapPopularity, Popularity
from crossrec_lit.models.blend import BlendRanker, parse_signals


def make_dm(source, split, **kwargs):
    return CrossDomainDataModule(source, "A", "B", split=split, batch_size=512, seed=0, **kwargs)


@pytest.fixture(scope="module")
def cold_dm(tiny_source):
    return make_dm(tiny_source, "cold_start")


@pytest.fixture(scope="module")
def loo_dm(tiny_source):
    return make_dm(tiny_source, "leave_one_out")


def build(cls, dm, **kwargs):
    return cls(**dm.model_arguments_for(cls), **kwargs)


def fit(model, dm):
    trainer = quiet_trainer(max_epochs=1, limit_val_batches=0)
    trainer.fit(model, dm)
    model.eval()
    return model, trainer


def val_ndcg(model, dm) -> float:
    return quiet_trainer(max_epochs=1).validate(model, dm, verbose=False)[0]["val/ndcg@10"]


def all_users(dm):
    return torch.arange(dm.num_users)


# ---------------------------------------------------------------------------------------------
# fitting and serving
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ranker", ["lambdarank", "linear"])
@pytest.mark.parametrize("split", ["cold_start", "leave_one_out"])
def test_fits_validates_and_ranks_candidates_above_fallback(split, ranker, cold_dm, loo_dm):
    dm = cold_dm if split == "cold_start" else loo_dm
    model, _ = fit(build(BlendRanker, dm, ranker=ranker, candidates=20, min_child_samples=20), dm)
    report = model.fit_report
    assert report["mode"] == ranker and report["holdout"] == ("cold" if split == "cold_start" else "warm")
    assert report["slice_users"] > 0 and 0 < report["candidate_recall"] <= 1
    assert report["labels_in_candidates"] == round(report["candidate_recall"] * report["labels"])
    learned = report["importance_gain_share" if ranker == "lambdarank" else "linear_weights"]
    assert set(learned) == set(model.feature_names) and any(v != 0 for v in learned.values())
    assert 0 < val_ndcg(model, dm) <= 1

    users = all_users(dm)
    full = model.full_scores(users)
    assert full.shape == (dm.num_users, dm.num_items) and torch.isfinite(full).all()
    # the candidates (at most `candidates` per item-level signal, none of the user's own training
    # items) score >= 1; every other item keeps the fallback order below them
    candidate = full >= 1
    per_user = candidate.sum(1)
    assert per_user.max() <= 20 * len(model.item_signals) and per_user.min() >= 20
    seen = dm.index.matrix("B", "train")
    rows, cols = seen.nonzero()
    assert not candidate[torch.from_numpy(rows), torch.from_numpy(cols)].any()
    fallback = model.state.fallback.expand_as(full)
    torch.testing.assert_close(full[~candidate], fallback[~candidate], rtol=0, atol=0)
    # pairwise scores agree with the full ranking, and a user's scores do not depend on the batch
    pick = torch.tensor([3, 40, 7, 3])
    items = torch.tensor([0, 5, 9, 11])
    torch.testing.assert_close(model.score(pick, items), full[pick, items], rtol=0, atol=0)
    model.USER_CHUNK = 7
    torch.testing.assert_close(model.full_scores(users.flip(0)), full.flip(0), rtol=0, atol=0)


def test_holdout_rules(cold_dm, loo_dm):
    """Cold start: a share of the SHARED users lose all their target items. Warm: each slice
    user's last target training item (by position) is the label."""
    for dm, cold in ((cold_dm, True), (loo_dm, False)):
        model = build(BlendRanker, dm, holdout_share=0.25, holdout_seed=5)
        idx = dm.index
        a_s, a_t = idx.arrays("A", "train"), idx.arrays("B", "train")
        keep, labels, slice_users = model._holdout(a_s, a_t, cold)
        sizes = np.bincount(a_t["users"], minlength=dm.num_users)
        if cold:
            eligible = np.intersect1d(np.unique(a_s["users"]), np.flatnonzero(sizes))
            assert np.isin(slice_users, eligible).all()
            assert not np.isin(a_t["users"][keep], slice_users).any()
            assert labels.nnz == sizes[slice_users].sum()
        else:
            eligible = np.flatnonzero(sizes >= 2)
            assert np.isin(slice_users, eligible).all()
            assert labels.nnz == len(slice_users) == (~keep).sum()
            for u in slice_users[:20]:
                mine = a_t["users"] == u
                last = a_t["items"][mine][np.argmax(a_t["positions"][mine])]
                assert labels[u].indices.tolist() == [last]
        assert len(slice_users) == round(0.25 * len(eligible))


# ---------------------------------------------------------------------------------------------
# one signal = that signal's baseline
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "signal, baseline",
    [("popularity", Popularity), ("overlap_popularity", OverlapPopularity), ("cooccurrence", CrossDomainCooccurrence)],
)
def test_single_signal_ranks_like_its_baseline(signal, baseline, cold_dm):
    dm = cold_dm
    blend, _ = fit(build(BlendRanker, dm, signals=signal), dm)
    base, _ = fit(build(baseline, dm), dm)
    users = all_users(dm)
    got, expected = blend.full_scores(users), base.full_scores(users)
    assert torch.equal(got, expected)
    assert torch.equal(topk_indices(got, 20), topk_indices(expected, 20))
    assert blend.fit_report["mode"] == "single_signal" and blend.booster is None
    assert val_ndcg(blend, dm) == pytest.approx(val_ndcg(base, dm), abs=0)


def test_signal_specs_for_searches():
    assert parse_signals("cooccurrence+popularity") == parse_signals(["popularity", "cooccurrence", "popularity"]) == ("popularity", "cooccurrence")
    assert parse_signals("all") == parse_signals(None) == (
        "popularity", "overlap_popularity", "cooccurrence", "target_item_knn", "source_history_size", "target_history_size",
    )
    assert "text_similarity" in parse_signals("all", text=True)
    assert parse_signals(" cooccurrence + source_history_size ") == ("cooccurrence", "source_history_size")


# ---------------------------------------------------------------------------------------------
# quality against the simple signals (synthetic stores, validation users only)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shift", [0.1, "independent"])
def test_blend_against_the_best_simple_signal(shift):
    source = Synthetic(n_users=3000, n_items=(300, 250), overlap=0.6, domain_shift=shift, interactions_per_user=(12, 8), seed=1)
    dm = make_dm(source, "cold_start", cold_valid_share=0.3)
    simple = {cls.__name__: val_ndcg(fit(build(cls, dm), dm)[0], dm) for cls in (Popularity, OverlapPopularity, CrossDomainCooccurrence)}
    blend = val_ndcg(fit(build(BlendRanker, dm, candidates=50), dm)[0], dm)
    if shift == "independent":
        # no shared taste: nothing to transfer, and the blend must not cost much against popularity
        assert blend >= simple["Popularity"] - 0.02, (blend, simple)
    else:
        # shared taste: the blend adds what co-occurrence misses (measured +0.05 here)
        assert blend >= max(simple.values()) - 0.005, (blend, simple)


# ---------------------------------------------------------------------------------------------
# fitting never looks at validation or test
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("split", ["cold_start", "leave_one_out"])
def test_bind_data_reads_training_data_only(split, tiny_source, monkeypatch):
    dm = make_dm(tiny_source, split)
    idx = dm.index
    inside = {"bind": False, "calls": 0}

    def guard(method):
        def wrapped(domain, parts="train", *args, **kwargs):
            if inside["bind"]:
                inside["calls"] += 1
                if ((parts,) if isinstance(parts, str) else tuple(parts)) != ("train",):
                    raise AssertionError(f"bind_data read {domain}/{parts}")
            return method(domain, parts, *args, **kwargs)

        return wrapped

    for name in ("matrix", "arrays", "users_with", "item_counts"):
        monkeypatch.setattr(idx, name, guard(getattr(idx, name)))
    bind = BlendRanker.bind_data

    def watched(self, datamodule):
        inside["bind"] = True
        try:
            bind(self, datamodule)
        finally:
            inside["bind"] = False

    monkeypatch.setattr(BlendRanker, "bind_data", watched)
    model, _ = fit(build(BlendRanker, dm, candidates=20, min_child_samples=20), dm)
    assert inside["calls"] > 0 and model.fit_report["slice_users"] > 0


# ---------------------------------------------------------------------------------------------
# checkpoints, determinism
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs", [{}, {"ranker": "linear"}, {"signals": "cooccurrence"}], ids=["lambdarank", "linear", "single"])
def test_checkpoint_round_trip(kwargs, cold_dm, tmp_path):
    dm = cold_dm
    model, trainer = fit(build(BlendRanker, dm, candidates=20, min_child_samples=20, **kwargs), dm)
    path = tmp_path / "blend.ckpt"
    trainer.save_checkpoint(path)
    users = all_users(dm)
    # the package's loader (RecommenderModule.load_from_checkpoint), with torch's default
    # weights_only loading: the booster travels as a string, the report as plain values
    assert BlendRanker.load_from_checkpoint.__func__ is RecommenderModule.load_from_checkpoint.__func__
    loaded = BlendRanker.load_from_checkpoint(path).eval()
    assert loaded.fit_report == model.fit_report
    torch.testing.assert_close(loaded.full_scores(users), model.full_scores(users), rtol=0, atol=0)
    expected = val_ndcg(model, dm)
    assert val_ndcg(loaded, dm) == pytest.approx(expected, abs=0)
    # restored into a fresh, never-fitted model, as the experiment runner validates its kept state
    fresh = build(BlendRanker, dm, candidates=20, min_child_samples=20, **kwargs)
    out = quiet_trainer(max_epochs=1).validate(fresh, dm, ckpt_path=str(path), verbose=False)[0]
    assert out["val/ndcg@10"] == pytest.approx(expected, abs=0) and fresh.fit_report == model.fit_report


def test_same_seed_same_scores(loo_dm):
    dm = loo_dm
    users = all_users(dm)[:200]
    a = fit(build(BlendRanker, dm, candidates=20, min_child_samples=20, holdout_seed=3), dm)[0].full_scores(users)
    b = fit(build(BlendRanker, dm, candidates=20, min_child_samples=20, holdout_seed=3), dm)[0].full_scores(users)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    c = fit(build(BlendRanker, dm, candidates=20, min_child_samples=20, holdout_seed=4), dm)[0].full_scores(users)
    assert not torch.equal(a, c)


# ---------------------------------------------------------------------------------------------
# the optional text signal
# ---------------------------------------------------------------------------------------------
def test_text_similarity_signal(tiny_source, cold_dm, tmp_path):
    dm = cold_dm
    texts = tiny_source.item_text()
    encoder = HashingTfidfEncoder(64).fit(texts["text"].tolist())
    vectors = encode_domains(texts, {"A": dm.source_item_vocab, "B": dm.target_item_vocab}, encoder)
    path = tmp_path / "text.npz"
    np.savez(path, source=vectors["A"], target=vectors["B"])
    model, trainer = fit(build(BlendRanker, dm, text_embeddings=str(path), candidates=20, min_child_samples=20), dm)
    assert "text_similarity" in model.fit_report["importance_gain_share"]
    single, _ = fit(build(BlendRanker, dm, signals="text_similarity", text_embeddings=str(path)), dm)
    assert val_ndcg(single, dm) > 0
    # a user's text scores do not depend on the batch around them (no row-count-dependent BLAS)
    users = all_users(dm)[:50]
    torch.testing.assert_close(torch.cat([single.full_scores(u) for u in users.split(1)]), single.full_scores(users), rtol=0, atol=0)
    model.USER_CHUNK = 1
    by_one = model.full_scores(users)
    model.USER_CHUNK = BlendRanker.USER_CHUNK
    torch.testing.assert_close(by_one, model.full_scores(users), rtol=0, atol=0)
    # the vectors travel in the checkpoint: the file is not needed to score
    ckpt = tmp_path / "m.ckpt"
    trainer.save_checkpoint(ckpt)
    path.unlink()
    loaded = BlendRanker.load_from_checkpoint(ckpt)
    torch.testing.assert_close(loaded.eval().full_scores(all_users(dm)), model.full_scores(all_users(dm)), rtol=0, atol=0)
    bad = tmp_path / "bad.npz"
    np.savez(bad, source=vectors["A"], target=vectors["B"][:-1])
    with pytest.raises(CrossRecError, match="'target' vectors of shape"):
        fit(build(BlendRanker, dm, text_embeddings=str(bad)), dm)


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"signals": "popularity+bestseller"}, "unknown signal 'bestseller'"),
        ({"signals": ["popularity", "cooc"]}, "unknown signal 'cooc'"),
        ({"signals": 3}, "signals must be a list"),
        ({"signals": "source_history_size+target_history_size"}, "no item-level signal"),
        ({"signals": "text_similarity"}, "needs item text vectors"),
        ({"signals": "all+text_similarity"}, "needs item text vectors"),
        ({"holdout_share": 0.0}, "holdout_share"),
        ({"holdout_share": 1.0}, "holdout_share"),
        ({"holdout_share": -0.5}, "holdout_share"),
        ({"candidates": 0}, "candidates"),
        ({"candidates": 2.5}, "candidates"),
        ({"ranker": "xgboost"}, "unknown ranker"),
        ({"holdout": "sometimes"}, "unknown holdout"),
        ({"num_leaves": 1}, "num_leaves"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"text_embeddings": "vectors.csv"}, "neither .npz nor .pt"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(CrossRecError, match=match) as info:
        BlendRanker(100, 50, 40, **kwargs)
    assert "Fix:" in str(info.value)


def test_needs_a_cross_domain_datamodule(tiny_source):
    dm = InteractionDataModule(tiny_source, "B", batch_size=256)
    with pytest.raises(CrossRecError, match="CrossDomainDataModule"):
        fit(BlendRanker(dm.num_users, dm.num_items, 5), dm)


def test_missing_text_file_is_named(cold_dm, tmp_path):
    with pytest.raises(CrossRecError, match="does not exist"):
        fit(build(BlendRanker, cold_dm, text_embeddings=str(tmp_path / "none.npz")), cold_dm)
