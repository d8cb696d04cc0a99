"""Chapter "Background": smoke runs on the synthetic fallback and on the real Amazon stores.

The chapter measures the Amazon stores when their files are found and falls back to the synthetic
stores (and says so) when they are not. ``test_smoke`` always runs, on the fallback: the chapter is
pointed at a folder that does not exist. ``test_real_data`` runs where the P5 files are present and
checks the measured counts against the numbers published with the data (SOURCE.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from chapter_runner import assert_metric as _assert_metric
from chapter_runner import smoke
from crossrec_lit.data import Synthetic

pytestmark = pytest.mark.chapter
SMOKE = {"synthetic_users": 600}  # the real-data run needs no smaller setting: it only counts (about 30 s)
PAIR = ("Beauty", "Toys")  # the chapter's default source and target stores (its parameters cell)

# SOURCE.md of ../shared/data/amazon_p5: users, items, interactions per store; shared customers.
AMAZON_COUNTS = {
    "Beauty": (22_363, 12_101, 198_502),
    "Sports": (35_598, 18_357, 296_337),
    "Toys": (19_412, 11_924, 167_597),
}
AMAZON_OVERLAP = {"Beauty&Sports": 1_625, "Beauty&Toys": 2_073, "Sports&Toys": 1_734}
AMAZON_IN_ALL = 741


def check_background(rec: dict) -> None:
    expected = {
        "data", "stores", "source_domain", "target_domain", "summary", "overlap", "shared_in_all_stores",
        "share_of_users_shared", "pair", "top_items_share", "popularity_test", "random_hit", "n_test_users", "k", "seed",
    }  # fmt: skip
    assert expected <= rec.keys(), f"missing keys: {sorted(expected - rec.keys())}"
    assert rec["data"] in ("amazon", "synthetic")
    target = rec["target_domain"]
    for store, row in rec["summary"].items():
        # density is interactions / (users x items), by hand
        assert row["density"] == pytest.approx(row["interactions"] / (row["users"] * row["items"]), rel=1e-12), store
        assert row["min_user_interactions"] >= 5, store  # 5-core data and the generator's minimum alike
        for key in ("users_at_most_5", "items_at_most_5"):
            _assert_metric(row[key], f"{store}.{key}")
    # the pair's share of the target store is the overlap over the target's customers
    pair = rec["pair"]
    assert pair["shared_users"] == rec["overlap"][f"{min(rec['source_domain'], target)}&{max(rec['source_domain'], target)}"]
    assert pair["share_of_target"] == pytest.approx(pair["shared_users"] / rec["summary"][target]["users"], rel=1e-12)
    for store, share in rec["share_of_users_shared"].items():
        _assert_metric(share, f"share_of_users_shared.{store}")
    # leave-one-out: every customer of the target store is a test user, one held-out item each
    assert rec["n_test_users"] == rec["summary"][target]["users"]
    for metric in ("hit", "ndcg", "recall"):
        _assert_metric(rec["popularity_test"][metric], f"popularity.{metric}@{rec['k']}")
    assert rec["popularity_test"]["hit"] == pytest.approx(rec["popularity_test"]["recall"], abs=1e-6)
    _assert_metric(rec["random_hit"], "random_hit")
    # the prose: popularity is far above a random order (Amazon: 10.7x; synthetic, 600 users, seeds 0-3: 4.8-6.9x) ...
    assert rec["popularity_test"]["hit"] > 2 * rec["random_hit"]
    # ... and still misses for most customers
    assert rec["popularity_test"]["hit"] < 0.5


def test_smoke(tmp_path: Path) -> None:
    """No data found: the synthetic fallback, flagged in the record, with the generator's own counts."""
    params = {**SMOKE, "data_root": str(tmp_path / "no-such-folder")}
    rec = smoke("background", tmp_path, params)
    check_background(rec)
    assert rec["data"] == "synthetic"
    assert rec["stores"] == sorted(PAIR)  # the generator makes two stores, named like the chapter's pair
    stores = Synthetic(n_users=SMOKE["synthetic_users"], domains=PAIR, seed=rec["seed"]).stores
    assert rec["overlap"] == {"Beauty&Toys": stores.params["n_overlap_users"]}
    expected = stores.table.summary()
    for store in PAIR:
        got = rec["summary"][store]
        assert (got["users"], got["items"], got["interactions"]) == tuple(int(expected.loc[store, c]) for c in ("users", "items", "interactions"))


@pytest.mark.real_data
def test_real_data(tmp_path: Path, data_root: Path) -> None:
    """The Amazon stores: every count the chapter measures equals the published one."""
    rec = smoke("background", tmp_path, {"data_root": str(data_root)})
    check_background(rec)
    assert rec["data"] == "amazon"
    assert rec["stores"] == sorted(AMAZON_COUNTS)
    for store, (users, items, interactions) in AMAZON_COUNTS.items():
        got = rec["summary"][store]
        assert (got["users"], got["items"], got["interactions"]) == (users, items, interactions), store
        assert got["min_user_interactions"] == 5 and got["median_history"] == 6, store  # SOURCE.md: min / median 5 / 6
    assert rec["overlap"] == AMAZON_OVERLAP
    assert rec["shared_in_all_stores"] == AMAZON_IN_ALL
    assert rec["pair"]["shared_users"] == AMAZON_OVERLAP["Beauty&Toys"]
    # ANCHORS.md: Popularity on Toys, leave-one-out, full ranking: NDCG@10 0.0049, Recall@10 0.0090
    # (4 decimals; the count and the tie-breaking are deterministic)
    assert rec["popularity_test"]["ndcg"] == pytest.approx(0.0049, abs=5e-5)
    assert rec["popularity_test"]["recall"] == pytest.approx(0.0090, abs=5e-5)
    # the prose: a few thousand shared customers against tens of thousands per store ...
    assert all(1_000 <= n < 10_000 for n in rec["overlap"].values())
    assert all(row["users"] >= 10_000 for row in rec["summary"].values())
    # ... and shared customers are heavier buyers than the target store's other customers (10 vs 6)
    assert rec["pair"]["median_history_target"] > rec["pair"]["median_history_target_only_users"]
