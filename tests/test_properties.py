"""Property tests of the data layer: random small interaction tables through the whole pipeline.

deduplicate -> k_core -> a split -> IndexedInteractions (-> TrainBatches), on tables of a few users,
items and domains with random duplicates, optional timestamps (with ties) and ratings, and ids that
look like numbers or missing values ("007", "7", "NA"). What must hold for every such table:

* a split neither loses nor duplicates an interaction: the multiset of (domain, user, item,
  position) rows is unchanged, every row carries exactly one label in train/valid/test, and the
  integer index maps every row back to itself;
* leave-one-out and ratio splits never test (or validate) a user on an item that user trained on;
* cold-start test (and validation) users have no target training rows at all;
* new-item test (and validation) items never appear in training;
* the negative sampler, excluding positives, never yields a training positive of the user unless
  that user owns the whole catalogue, and an epoch serves every training interaction once.

Examples are derandomised and no example database is kept, so CI runs the same cases every time.
"""

from __future__ import annotations

from collections import Counter
from unittest import mock

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from crossrec_lit import CrossRecError
from crossrec_lit.data import IndexedInteractions, InteractionTable, deduplicate, k_core
from crossrec_lit.data import sampling
from crossrec_lit.data.interactions import SPLIT_VALUES
from crossrec_lit.data.sampling import TrainBatches
from crossrec_lit.data.split import cold_start_split, leave_one_out, new_item_split, ratio_split

USER_IDS = ["u0", "u1", "007", "7", "NA", "u5"]
ITEM_IDS = ["i0", "0123", "123", "null", "i4", "i5"]  # the same ids in every domain: catalogues are per domain
DOMAINS = ["A", "B"]

PROPERTY = settings(
    max_examples=50,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# ====================================================================== random tables
@st.composite
def tables(draw, *, both_domains: bool = False, shared_users: int = 0) -> InteractionTable:
    """A small random table; ``shared_users`` users are given rows in both domains (before filtering)."""
    domains = DOMAINS if both_domains else DOMAINS[: draw(st.integers(1, 2))]
    users = USER_IDS[: draw(st.integers(max(2, shared_users), len(USER_IDS)))]
    items = ITEM_IDS[: draw(st.integers(2, len(ITEM_IDS)))]
    row = st.tuples(st.sampled_from(domains), st.sampled_from(users), st.sampled_from(items), st.integers(0, 6), st.integers(1, 5))
    rows = draw(st.lists(row, min_size=2, max_size=40))
    for user in users[:shared_users]:
        for domain in domains:
            rows.append((domain, user, draw(st.sampled_from(items)), draw(st.integers(0, 6)), draw(st.integers(1, 5))))
    rows = draw(st.permutations(rows))
    frame = pd.DataFrame(rows, columns=["domain", "user", "item", "ts", "stars"])
    with_ts, with_rating = draw(st.booleans()), draw(st.booleans())
    return InteractionTable.from_frame(
        frame,
        domain_col="domain",
        timestamp_col="ts" if with_ts else None,
        rating_col="stars" if with_rating else None,
    )


def preprocess(table: InteractionTable, policy: str, k: int) -> InteractionTable | None:
    """deduplicate then k-core; None when k-core empties a domain (which must be a clear error)."""
    table = deduplicate(table, policy)
    if policy != "none":
        assert not table.frame.duplicated(["domain", "user", "item"]).any()
    try:
        return k_core(table, k, k)
    except CrossRecError as exc:
        assert "left domain" in str(exc) and "Fix:" in str(exc)
        event("k-core emptied a domain (refused)")
        return None


policies = st.sampled_from(["first", "last", "none"])
k_values = st.sampled_from([0, 1, 2, 0])  # 2 often empties a tiny domain: drawn less


# ====================================================================== checks shared by every split
def rows(table: InteractionTable, with_split: bool = False) -> Counter:
    cols = ["domain", "user", "item", "position"] + (["split"] if with_split else [])
    return Counter((d, u, i, int(p), *rest) for d, u, i, p, *rest in table.frame[cols].itertuples(index=False))


def check_split_keeps_rows(before: InteractionTable, after: InteractionTable) -> IndexedInteractions:
    assert len(after) == len(before)
    assert rows(after) == rows(before)  # nothing lost or duplicated
    assert after.frame["split"].isin(SPLIT_VALUES).all()  # exactly one known label per row
    # ratings and timestamps travel with their rows
    extra = [c for c in ("rating", "timestamp") if c in before.frame.columns]
    key = ["domain", "user", "item", "position"]
    assert before.frame[key + extra].sort_values(key).reset_index(drop=True).equals(after.frame[key + extra].sort_values(key).reset_index(drop=True))

    # the integer view maps every row to exactly one (domain, part) and back to its ids
    idx = IndexedInteractions(after)
    rebuilt = Counter()
    for domain in idx.domains:
        for part in SPLIT_VALUES:
            a = idx.arrays(domain, part)
            users = idx.user_vocab.decode(a["users"])
            items = idx.item_vocabs[domain].decode(a["items"])
            rebuilt.update((domain, u, i, int(p), part) for u, i, p in zip(users, items, a["positions"]))
    assert rebuilt == rows(after, with_split=True)
    assert sum(idx.num_items(d) for d in idx.domains) == after.frame.groupby("domain")["item"].nunique().sum()
    return idx


def check_held_out_items_not_trained(split: InteractionTable, idx: IndexedInteractions) -> None:
    """Per user and domain, no test or validation item is also a training item."""
    f = split.frame
    for (domain, user), g in f.groupby(["domain", "user"]):
        train = set(g.loc[g["split"] == "train", "item"])
        for part in ("valid", "test"):
            assert not train & set(g.loc[g["split"] == part, "item"]), (domain, user, part)
    for domain in idx.domains:  # the same through the sparse matrices the evaluation masks with
        train = idx.matrix(domain, "train")
        for part in ("valid", "test"):
            assert train.multiply(idx.matrix(domain, part)).nnz == 0


# ====================================================================== the splits
@PROPERTY
@given(table=tables(), policy=policies, k=k_values, validation=st.booleans())
def test_leave_one_out(table, policy, k, validation):
    table = preprocess(table, policy, k)
    if table is None:
        return
    split = leave_one_out(table, validation=validation)
    idx = check_split_keeps_rows(table, split)
    f = split.frame
    for _, g in f.groupby(["domain", "user"]):
        n = len(g)
        labels = g.sort_values("position")["split"].tolist()
        assert labels.count("test") == (1 if n >= 2 else 0)
        assert labels.count("valid") == (1 if validation and n >= 3 else 0)
        if n >= 2:
            assert labels[-1] == "test"  # the last interaction (by position) is the test one
    if policy != "none":
        check_held_out_items_not_trained(split, idx)


@PROPERTY
@given(
    table=tables(),
    policy=policies,
    k=k_values,
    valid=st.sampled_from([0.0, 0.1, 0.25]),
    test=st.sampled_from([0.1, 0.2, 0.5]),
    order=st.sampled_from(["random", "time"]),
    seed=st.integers(0, 3),
)
def test_ratio_split(table, policy, k, valid, test, order, seed):
    table = preprocess(table, policy, k)
    if table is None:
        return
    split = ratio_split(table, valid=valid, test=test, order=order, seed=seed)
    idx = check_split_keeps_rows(table, split)
    for _, g in split.frame.groupby(["domain", "user"]):
        labels = g["split"].tolist()
        assert "train" in labels  # every user keeps something to learn from
        if len(g) >= 2:
            assert "test" in labels
        if order == "time" and len(g) >= 2:
            # held-out rows are the latest: nothing in train comes after a test row
            assert g.loc[g["split"] == "train", "position"].max() < g.loc[g["split"] == "test", "position"].min()
    if policy != "none":
        check_held_out_items_not_trained(split, idx)


@PROPERTY
@given(
    table=tables(both_domains=True, shared_users=2),
    policy=policies,
    k=k_values,
    share=st.sampled_from([0.5, 0.4, 0.8, 0.2]),
    valid_share=st.sampled_from([0.0, 0.1]),
    seed=st.integers(0, 3),
)
def test_cold_start_split(table, policy, k, share, valid_share, seed):
    table = preprocess(table, policy, k)
    if table is None:
        return
    f = table.frame
    shared = set(f.loc[f["domain"] == "A", "user"]) & set(f.loc[f["domain"] == "B", "user"])
    if len(shared) < 2:
        with pytest.raises(CrossRecError, match="a cold-start split needs users shared by 'A' and 'B'"):
            cold_start_split(table, source="A", target="B", share=share, valid_share=valid_share, seed=seed)
        event("fewer than 2 shared users (refused)")
        return
    try:
        split = cold_start_split(table, source="A", target="B", share=share, valid_share=valid_share, seed=seed)
    except CrossRecError as exc:
        assert round(share * len(shared)) == 0 and "selects no test user" in str(exc)
        event("share selects no test user (refused)")
        return
    check_split_keeps_rows(table, split)
    s = split.frame
    assert (s.loc[s["domain"] == "A", "split"] == "train").all()  # the source store is all training data
    target = s[s["domain"] == "B"]
    test_users = set(target.loc[target["split"] == "test", "user"])
    valid_users = set(target.loc[target["split"] == "valid", "user"])
    trained = set(target.loc[target["split"] == "train", "user"])
    assert test_users and test_users <= shared and valid_users <= shared
    assert not test_users & trained, "a cold-start test user has target training rows"
    assert not valid_users & trained, "a cold-start validation user has target training rows"
    assert not test_users & valid_users
    assert len(test_users) == round(share * len(shared))


@PROPERTY
@given(table=tables(both_domains=True, shared_users=2), k=st.sampled_from([0, 1]), data=st.data())
def test_cold_start_folds_test_every_shared_user_once(table, k, data):
    table = preprocess(table, "first", k)
    if table is None:
        return
    f = table.frame
    shared = set(f.loc[f["domain"] == "A", "user"]) & set(f.loc[f["domain"] == "B", "user"])
    if len(shared) < 2:
        return
    n_folds = data.draw(st.integers(2, len(shared)), label="n_folds")
    seed = data.draw(st.integers(0, 3), label="seed")
    tested = Counter()
    for fold in range(n_folds):
        split = cold_start_split(table, source="A", target="B", share=1 / n_folds, fold=fold, n_folds=n_folds, valid_share=0.0, seed=seed)
        s = split.frame
        tested.update(set(s.loc[(s["domain"] == "B") & (s["split"] == "test"), "user"]))
    assert set(tested) == shared and set(tested.values()) == {1}


@PROPERTY
@given(
    table=tables(),
    policy=policies,
    k=k_values,
    share=st.sampled_from([0.5, 0.3, 0.2]),
    valid_share=st.sampled_from([0.0, 0.2]),
    seed=st.integers(0, 3),
    data=st.data(),
)
def test_new_item_split(table, policy, k, share, valid_share, seed, data):
    table = preprocess(table, policy, k)
    if table is None:
        return
    f = table.frame
    several = [d for d in table.domains if f.loc[f["domain"] == d, "item"].nunique() >= 2]
    domain = data.draw(st.sampled_from(several or table.domains), label="domain")
    n_items = table.frame.loc[table.frame["domain"] == domain, "item"].nunique()
    try:
        split = new_item_split(table, domain=domain, share=share, valid_share=valid_share, seed=seed)
    except CrossRecError as exc:
        assert round(share * n_items) == 0 and "selects no test item" in str(exc)
        event("share selects no test item (refused)")
        return
    idx = check_split_keeps_rows(table, split)
    s = split.frame
    assert (s.loc[s["domain"] != domain, "split"] == "train").all()  # other stores are untouched
    d = s[s["domain"] == domain]
    assert (d.groupby("item")["split"].nunique() == 1).all()  # an item moves with ALL its rows
    test_items = set(d.loc[d["split"] == "test", "item"])
    valid_items = set(d.loc[d["split"] == "valid", "item"])
    train_items = set(d.loc[d["split"] == "train", "item"])
    assert len(test_items) == round(share * n_items)
    assert not test_items & train_items and not valid_items & train_items and not test_items & valid_items
    # and in the index: a new item has no training interaction, yet stays in the catalogue
    counts = idx.item_counts(domain, "train")
    held_out = idx.item_vocabs[domain].encode(sorted(test_items | valid_items), what="item")
    assert (counts[held_out] == 0).all()
    assert idx.num_items(domain) == n_items


# ====================================================================== the sampler
@PROPERTY
@given(
    table=tables(),
    k=k_values,
    num_negatives=st.integers(1, 4),
    batch_size=st.integers(1, 16),
    seed=st.integers(0, 5),
    epoch=st.integers(0, 2),
    max_rounds=st.sampled_from([10, 1, 0]),
    bitmap=st.booleans(),
    data=st.data(),
)
def test_sampler_never_yields_a_training_positive(table, k, num_negatives, batch_size, seed, epoch, max_rounds, bitmap, data):
    table = preprocess(table, "first", k)
    if table is None:
        return
    # domains left out of the split stay all-train: there a user can own the whole catalogue
    split = leave_one_out(table, domains=data.draw(st.lists(st.sampled_from(table.domains), unique=True), label="split domains"))
    idx = IndexedInteractions(split)
    for key, domain in enumerate(idx.domains):
        a = idx.arrays(domain, "train")
        n_items = idx.num_items(domain)
        positives = idx.matrix(domain, "train")
        kwargs = dict(num_items=n_items, batch_size=batch_size, num_negatives=num_negatives, positives=positives, seed=seed, domain_key=key)
        if n_items < 2:
            with pytest.raises(CrossRecError, match="at least 2 items"):
                TrainBatches(a["users"], a["items"], **kwargs)
            event("one-item catalogue (refused)")
            continue
        # the bitmap and the binary-search lookups of positives must agree; max_rounds=0 sends every
        # collision straight to the exact draw from the user's complement
        with mock.patch.object(sampling, "BITMAP_MAX_BITS", sampling.BITMAP_MAX_BITS if bitmap else 0):
            batches = TrainBatches(a["users"], a["items"], **kwargs)
        batches.sampler.max_rounds = max_rounds
        batches.set_epoch(epoch)
        owned = np.diff(positives.indptr)  # items each user trained on
        served = Counter()
        for batch in batches:
            users, items, negatives = batch["users"].numpy(), batch["items"].numpy(), batch["negatives"].numpy()
            assert negatives.shape == (len(users), num_negatives)
            assert ((negatives >= 0) & (negatives < n_items)).all()
            for user, row in zip(users, negatives):
                event("a user owns the whole catalogue" if owned[user] == n_items else "users with negatives to give")
                if owned[user] < n_items:  # a user who owns the whole catalogue has no negative to give
                    trained = set(positives.indices[positives.indptr[user] : positives.indptr[user + 1]])
                    assert not trained & set(row.tolist()), (user, row, trained)
            served.update(zip(users.tolist(), items.tolist()))
        # one epoch serves every training interaction exactly once
        assert served == Counter(zip(a["users"].tolist(), a["items"].tolist()))
