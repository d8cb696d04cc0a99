"""The synthetic two-store generator: determinism, structure, and that each knob does what it says."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from crossrec_lit.data.sources import SyntheticStores, make_synthetic_stores
from crossrec_lit.data.sources import synthetic
from crossrec_lit.errors import CrossRecError


@pytest.fixture(scope="module")
def stores() -> SyntheticStores:
    return make_synthetic_stores()


def test_same_seed_same_output():
    a, b = make_synthetic_stores(n_users=300, seed=7), make_synthetic_stores(n_users=300, seed=7)
    pd.testing.assert_frame_equal(a.table.frame, b.table.frame)
    pd.testing.assert_frame_equal(a.item_text, b.item_text)
    for d in ("A", "B"):
        np.testing.assert_array_equal(a.user_factors[d], b.user_factors[d])
        np.testing.assert_array_equal(a.item_factors[d], b.item_factors[d])
    assert a.params == b.params
    c = make_synthetic_stores(n_users=300, seed=8)
    assert not a.table.frame.equals(c.table.frame)


def test_shapes_ids_and_params(stores):
    assert stores.table.domains == ["A", "B"]
    assert stores.user_factors["A"].shape == stores.user_factors["B"].shape == (2000, 8)
    assert stores.item_factors["A"].shape == (600, 8) and stores.item_factors["B"].shape == (500, 8)
    assert stores.user_ids[123] == "u000123" and len(stores.user_ids) == 2000
    assert stores.item_ids("A")[42] == "A_i00042" and len(stores.item_ids("B")) == 500
    assert set(stores.table.items("B")) <= set(stores.item_ids("B"))
    assert list(stores.item_text.columns) == ["domain", "item", "text"]
    assert stores.item_text.groupby("domain").size().to_dict() == {"A": 600, "B": 500}
    assert stores.params["n_items"] == (600, 500) and stores.params["taste_correlation"] == pytest.approx(1 / 1.04)
    with pytest.raises(CrossRecError, match="unknown domain 'C'"):
        stores.item_ids("C")


def test_factor_rows_follow_id_order():
    # Rows of user_factors are indexed by the number in the id, which is also sorted id order.
    stores = make_synthetic_stores(n_users=150, seed=1)
    assert list(stores.user_ids) == sorted(stores.user_ids)
    assert list(stores.item_ids("A")) == sorted(stores.item_ids("A"))
    wide = synthetic._item_ids("A", 100_001)  # ids widen rather than overflow their padding
    assert wide[0] == "A_i000000" and wide[-1] == "A_i100000"


@pytest.mark.parametrize("overlap", [0.0, 0.3, 0.5, 1.0])
def test_overlap_share(overlap):
    stores = make_synthetic_stores(n_users=1001, overlap=overlap, seed=2)
    a, b = set(stores.table.users("A")), set(stores.table.users("B"))
    assert len(a & b) == stores.params["n_overlap_users"] == round(overlap * 1001)
    assert len(a | b) == 1001
    only_a, only_b = len(a - b), len(b - a)
    assert abs(only_a - only_b) <= 1  # the rest is split evenly


def test_every_user_has_at_least_five_distinct_items(stores):
    frame = stores.table.frame
    counts = frame.groupby(["domain", "user"]).size()
    assert counts.min() >= 5
    assert counts["A"].mean() == pytest.approx(12, abs=0.3)
    assert counts["B"].mean() == pytest.approx(8, abs=0.3)
    assert not frame.duplicated(["domain", "user", "item"]).any()


def test_positions_are_a_permutation_per_user(stores):
    frame = stores.table.frame
    g = frame.groupby(["domain", "user"])["position"]
    assert (g.min() == 0).all() and (g.max() + 1 == g.size()).all() and (g.nunique() == g.size()).all()
    # Order is random, not by preference: the first item is no better liked than the others.
    a = frame[frame["domain"] == "A"]
    users = a["user"].str[1:].astype(int).to_numpy()
    items = a["item"].str.split("_i").str[1].astype(int).to_numpy()
    affinity = np.einsum("ij,ij->i", stores.user_factors["A"][users], stores.item_factors["A"][items])
    first = a["position"].to_numpy() == 0
    assert affinity.mean() > 1.0  # picks are well liked...
    assert abs(affinity[first].mean() - affinity[~first].mean()) < 0.1  # ...whatever their position


def test_sampler_matches_softmax_probabilities():
    rng = np.random.default_rng(0)
    dim, n = 4, 40_000
    taste = np.tile(rng.standard_normal(dim), (n, 1))
    items = rng.standard_normal((6, dim))
    bias = rng.standard_normal(6)
    _, cols, _ = synthetic._sample_histories(taste, items, bias, np.ones(n, dtype=np.int64), 1.0, rng)
    logits = synthetic.SHARPNESS * items @ taste[0] / np.sqrt(dim) + bias
    expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    observed = np.bincount(cols, minlength=6) / n
    np.testing.assert_allclose(observed, expected, atol=0.01)


@pytest.mark.parametrize("n_cols, k", [(600, 30), (3000, 30), (10_000, 5), (10_000, 200), (9000, 3000)])
def test_top_k_columns_is_exact(n_cols, k):
    scores = np.random.default_rng(n_cols + k).standard_normal((64, n_cols)).astype(np.float32)
    top = synthetic._top_k_columns(scores, k)
    expected = -np.sort(-scores, axis=1)[:, :k]
    np.testing.assert_array_equal(np.take_along_axis(scores, top, axis=1), expected)  # ties may swap columns
    assert all(len(set(row)) == k for row in top)


def test_wide_catalogue_goes_through_the_threshold_path():
    stores = make_synthetic_stores(n_users=200, n_items=(5000, 3000), seed=4)
    counts = stores.table.frame.groupby(["domain", "user"]).size()
    assert counts.min() >= 5 and not stores.table.frame.duplicated(["domain", "user", "item"]).any()


def _share_word_cosine_gap(stores: SyntheticStores) -> float:
    """Mean factor cosine of item pairs sharing a topic word, minus that of all pairs."""
    factors = np.vstack([stores.item_factors["A"], stores.item_factors["B"]])
    factors /= np.linalg.norm(factors, axis=1, keepdims=True)
    vocab = {w: j for j, w in enumerate(w for topic in synthetic.TOPICS for w in topic)}
    words = np.zeros((len(factors), len(vocab)))
    for row, text in enumerate(stores.item_text["text"]):
        for word in text.split():
            if word in vocab:
                words[row, vocab[word]] = 1
    share = (words @ words.T) > 0
    off_diagonal = ~np.eye(len(factors), dtype=bool)
    cosine = factors @ factors.T
    return float(cosine[share & off_diagonal].mean() - cosine[off_diagonal].mean())


def test_text_signal_controls_how_informative_text_is():
    informative = make_synthetic_stores(n_users=50, text_signal=1.0, seed=3)
    noise = make_synthetic_stores(n_users=50, text_signal=0.0, seed=3)
    assert _share_word_cosine_gap(informative) > 0.12  # measured 0.19
    assert abs(_share_word_cosine_gap(noise)) < 0.02  # measured 0.00
    texts = informative.item_text["text"].str.split()
    assert texts.str.len().between(5, 9).all()  # 4-8 distinct words plus the store noun
    assert (texts.apply(lambda words: len(set(words))) == texts.str.len()).all()
    nouns_a = texts[informative.item_text["domain"] == "A"].str[-1]
    assert set(nouns_a) <= set(synthetic.STORE_NOUNS[0])


def _taste_correlation(stores: SyntheticStores) -> float:
    a, b = stores.user_factors["A"].ravel(), stores.user_factors["B"].ravel()
    return float(np.corrcoef(a, b)[0, 1])


@pytest.mark.parametrize("shift, expected", [(0.0, 1.0), (1.0, 0.5), (3.0, 0.1), ("independent", 0.0)])
def test_domain_shift_sets_taste_correlation(shift, expected):
    stores = make_synthetic_stores(n_users=1000, domain_shift=shift, seed=5)
    assert stores.params["taste_correlation"] == pytest.approx(expected)
    assert _taste_correlation(stores) == pytest.approx(expected, abs=0.04)
    # The rescaling keeps every store's tastes equally spread whatever the shift.
    assert stores.user_factors["B"].std() == pytest.approx(1.0, abs=0.05)


def test_popularity_skew_concentrates_interactions():
    def top_share(skew: float) -> float:
        counts = make_synthetic_stores(n_users=1000, popularity_skew=skew, seed=6).table.domain("A").frame["item"].value_counts()
        return counts.iloc[:60].sum() / counts.sum()  # share of the top 10% of items

    assert top_share(0.0) < top_share(1.0) < top_share(2.0)


def test_other_domain_names():
    stores = make_synthetic_stores(n_users=100, domains=("Books", "Movies"), n_items=50, interactions_per_user=6)
    assert stores.table.domains == ["Books", "Movies"]
    assert stores.item_ids("Movies")[0] == "Movies_i00000"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"overlap": 1.5}, "overlap must be in"),
        ({"overlap": "half"}, "overlap must be a number"),
        ({"n_users": 0}, "n_users must be a positive integer"),
        ({"n_users": 1, "overlap": 0.0}, "second store gets no users"),
        ({"domains": ("A", "A")}, "two distinct"),
        ({"domains": ("A",)}, "two distinct"),
        ({"domains": ("A", "B c")}, "whitespace"),
        ({"dim": 0}, "dim must be"),
        ({"dim": len(synthetic.TOPICS) + 1}, "dim must be"),
        ({"domain_shift": -1}, "domain_shift must be >= 0"),
        ({"domain_shift": "bogus"}, "'independent'"),
        ({"text_signal": 2}, "text_signal must be in"),
        ({"interactions_per_user": 3}, "at least 5"),
        ({"interactions_per_user": (10, 8, 6)}, "one value per store"),
        ({"n_items": (3, 500)}, "at least 5 items"),
        ({"popularity_skew": -1}, "popularity_skew must be >= 0"),
        ({"popularity_skew": float("nan")}, "must be finite"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(CrossRecError, match=message):
        make_synthetic_stores(**kwargs)


def test_default_size_is_fast():
    best = min(_timed(make_synthetic_stores) for _ in range(3))
    assert best < 0.5, f"took {best:.2f} s"


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def test_ratings_follow_taste_and_leave_the_picks_unchanged():
    plain = make_synthetic_stores(n_users=1500, seed=3)
    rated = make_synthetic_stores(n_users=1500, seed=3, ratings=True)
    pd.testing.assert_frame_equal(plain.table.frame, rated.table.frame.drop(columns="rating"))
    frame = rated.table.frame
    assert set(np.unique(frame["rating"])) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    assert 3.8 < frame["rating"].mean() < 4.6  # mostly 4-5 stars, as on Amazon
    # the stars carry the taste: they correlate with the true affinity of the pick, in both stores
    users = {u: k for k, u in enumerate(rated.user_ids)}
    for domain in rated.params["domains"]:
        part = frame[frame["domain"] == domain]
        items = {i: k for k, i in enumerate(rated.item_ids(domain))}
        taste = rated.user_factors[domain][part["user"].map(users).to_numpy()]
        factors = rated.item_factors[domain][part["item"].map(items).to_numpy()]
        affinity = (taste * factors).sum(1)
        assert np.corrcoef(affinity, part["rating"])[0, 1] > 0.4
    with pytest.raises(CrossRecError, match="ratings must be True or False"):
        make_synthetic_stores(n_users=100, ratings="yes")
