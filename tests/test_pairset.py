"""PairSet answers membership exactly in both layouts, and the hash layout's memory is linear."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from crossrec_lit.data.pairset import PairSet


@settings(max_examples=60, deadline=None)
@given(
    members=st.lists(st.integers(0, 5_000), max_size=300),
    queries=st.lists(st.integers(0, 5_000), min_size=1, max_size=300),
    hash_layout=st.booleans(),
)
def test_membership_is_exact_in_both_layouts(members, queries, hash_layout):
    pairs = PairSet(np.array(members, dtype=np.int64), 5_001, bitmap_max_bits=0 if hash_layout else 1 << 31)
    assert pairs.layout == ("hash" if hash_layout else "bitmap")
    assert len(pairs) == len(set(members))
    q = torch.tensor(queries, dtype=torch.long).reshape(-1, 1)
    expected = np.isin(np.array(queries), np.array(members, dtype=np.int64)).reshape(-1, 1)
    assert np.array_equal(pairs.contains(q).numpy(), expected)


def test_hash_layout_handles_clustered_and_huge_keys():
    # consecutive keys (one user's items) and keys far beyond 2^31 (millions of users x items)
    rng = np.random.default_rng(0)
    members = np.unique(np.r_[np.arange(10_000), rng.integers(0, 5 * 10**11, 50_000)])
    pairs = PairSet(members, 5 * 10**11)
    assert pairs.layout == "hash"
    absent = np.setdiff1d(rng.integers(0, 5 * 10**11, 50_000), members)
    assert pairs.contains(torch.from_numpy(members)).all()
    assert not pairs.contains(torch.from_numpy(absent)).any()
    # at most half full and a power of two: 16 to 32 bytes per member
    assert 16 * len(members) <= pairs._table.nbytes <= 32 * len(members)


def test_an_empty_set_contains_nothing():
    for space in (100, 10**12):
        assert not PairSet(np.array([], dtype=np.int64), space).contains(torch.arange(50)).any()


def test_a_run_that_passes_the_tables_end_wraps_to_its_start():
    # keys whose home slots crowd the last slots of the table: their run must wrap around
    from crossrec_lit.data.pairset import _slots

    candidates = np.arange(200_000, dtype=np.int64)
    bits = 6  # 20 keys -> a 64-slot table
    home = _slots(candidates, 64 - bits)
    crowd = candidates[home == (1 << bits) - 1][:12]
    members = np.r_[crowd, candidates[home == 0][:3], candidates[home == 5][:5]]
    assert len(members) == 20
    pairs = PairSet(members, 10**12)
    assert len(pairs._table) == 64
    assert pairs.contains(torch.from_numpy(members)).all()
    assert not pairs.contains(torch.from_numpy(np.setdiff1d(candidates[:5_000], members))).any()


@given(st.lists(st.integers(-5, 50), max_size=40))
def test_sorted_unique_is_np_unique(values):
    from crossrec_lit.data.pairset import sorted_unique

    keys = np.array(values, dtype=np.int64)
    assert np.array_equal(sorted_unique(keys), np.unique(keys))
    assert np.array_equal(sorted_unique(np.unique(keys)), np.unique(keys))
