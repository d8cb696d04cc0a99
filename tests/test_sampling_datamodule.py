"""Batch-level sampling and the DataModules."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from crossrec_lit import CrossRecError
from crossrec_lit.data import CrossDomainDataModule, EvalBatches, InteractionDataModule, NegativeSampler, TrainBatches


def test_negative_sampler_excludes_positives():
    rng = np.random.default_rng(0)
    n_users, n_items = 30, 20
    dense = rng.random((n_users, n_items)) < 0.5
    pos = sp.csr_matrix(dense)
    sampler = NegativeSampler(n_items, pos)
    users = torch.arange(n_users).repeat_interleave(50)
    neg = sampler.sample(users, 4, torch.Generator().manual_seed(1))
    assert neg.shape == (len(users), 4)
    assert not dense[users.numpy()[:, None], neg.numpy()].any()


def test_train_batches_cover_the_epoch_and_are_reproducible():
    users, items = np.arange(1000) % 37, np.arange(1000) % 11
    ds = TrainBatches(users, items, num_items=11, batch_size=128, num_negatives=2, seed=5)
    ds.set_epoch(3)
    batches = list(ds)
    assert len(batches) == len(ds) == 8
    seen = torch.cat([b["users"] * 100 + b["items"] for b in batches]).sort().values
    assert torch.equal(seen, torch.from_numpy(users * 100 + items).sort().values)
    again = list(ds)
    assert all(torch.equal(a["negatives"], b["negatives"]) for a, b in zip(batches, again))
    ds.set_epoch(4)
    assert not torch.equal(list(ds)[0]["users"], batches[0]["users"])


def test_train_batches_reject_bad_settings():
    with pytest.raises(CrossRecError, match="batch_size"):
        TrainBatches(np.arange(3), np.arange(3), num_items=5, batch_size=0)
    with pytest.raises(CrossRecError, match="no training interactions"):
        TrainBatches(np.arange(0), np.arange(0), num_items=5)


def test_eval_batches_carry_truth_and_exclusions():
    truth = sp.csr_matrix(np.array([[0, 1, 0], [1, 0, 0], [0, 0, 1]], dtype=bool))
    seen = sp.csr_matrix(np.array([[1, 0, 0], [0, 0, 1], [0, 0, 0]], dtype=bool))
    batches = list(EvalBatches(np.array([0, 2]), truth, seen, batch_size=1))
    assert [b["users"].tolist() for b in batches] == [[0], [2]]
    assert batches[0]["truth"].tolist() == [[0], [1]]
    assert batches[0]["exclude"].tolist() == [[0], [0]]
    assert batches[1]["exclude"].shape == (2, 0)


def test_datamodule_links_sizes_and_serves_batches(tiny_source):
    dm = InteractionDataModule(tiny_source, "B", batch_size=64, num_negatives=3)
    assert dm.num_items == len(tiny_source.load().items("B"))
    assert dm.num_users == len(tiny_source.load().users("B"))
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"users", "items", "negatives"} and batch["negatives"].shape == (64, 3)
    val = next(iter(dm.val_dataloader()))
    assert {"users", "truth", "exclude"} <= set(val)
    # at test time the validation item is masked too
    test_excl = sum(b["exclude"].shape[1] for b in dm.test_dataloader())
    val_excl = sum(b["exclude"].shape[1] for b in dm.val_dataloader())
    assert test_excl > val_excl


def test_datamodule_errors(tiny_source, tmp_path):
    with pytest.raises(CrossRecError, match="choose one with domain"):
        InteractionDataModule(tiny_source).num_items
    with pytest.raises(CrossRecError, match="unknown split"):
        InteractionDataModule(tiny_source, "B", split="random")
    with pytest.raises(CrossRecError, match="does not exist"):
        InteractionDataModule(tiny_source, "B", split="file", split_file=str(tmp_path / "x.csv"))
    with pytest.raises(CrossRecError, match="must be a DataSource"):
        InteractionDataModule("data.csv")


def test_split_file_is_saved_and_reused(tiny_source, tmp_path):
    path = tmp_path / "split.csv.gz"
    dm = InteractionDataModule(tiny_source, "B", split="ratio", split_file=str(path), seed=3)
    n = dm.num_items
    again = InteractionDataModule(tiny_source, "B", split="file", split_file=str(path))
    assert again.num_items == n
    assert again.table.frame["split"].tolist() == dm.table.frame["split"].tolist()


def test_cross_domain_phases_and_shared_user_index(tiny_source):
    dm = CrossDomainDataModule(tiny_source, "A", "B", batch_size=64, phase="both")
    loader = dm.train_dataloader()
    batch, _, _ = next(iter(loader))
    assert set(batch) == {"source", "target"}
    assert batch["source"]["items"].max() < dm.num_source_items
    assert batch["target"]["items"].max() < dm.num_items
    dm.set_phase("source")
    assert set(next(iter(dm.train_dataloader()))[0]) == {"source"}
    dm.set_phase("overlap")
    overlap_batch = next(iter(dm.train_dataloader()))[0]["overlap"]
    assert np.isin(overlap_batch["users"].numpy(), dm.overlap_users()).all()
    overlap = dm.overlap_users()
    assert len(overlap) > 0 and dm.overlap.overlap_users >= len(overlap)
    assert dm.model_arguments()["num_source_items"] == dm.num_source_items


def test_source_evaluation_keeps_indices(tiny_source):
    target = CrossDomainDataModule(tiny_source, "A", "B")
    source = CrossDomainDataModule(tiny_source, "A", "B", eval_domain="source", phase="source")
    assert source.num_items == target.num_source_items
    assert source.user_vocab.to_list() == target.user_vocab.to_list()
    assert source.source_item_vocab.to_list() == target.source_item_vocab.to_list()
    assert len(source.index.users_with("A", "test")) > 0
    # the target split is unchanged by evaluating the source
    tf, sf = target.table.frame, source.table.frame
    assert (tf[tf.domain == "B"]["split"].to_numpy() == sf[sf.domain == "B"]["split"].to_numpy()).all()


def test_cross_domain_cold_start_serves_cold_users(tiny_source):
    dm = CrossDomainDataModule(tiny_source, "A", "B", split="cold_start", cold_start_share=0.2, cold_valid_share=0.1, seed=1)
    idx = dm.index
    test_users = idx.users_with("B", "test")
    assert not np.intersect1d(test_users, idx.users_with("B", "train")).size
    assert np.isin(test_users, idx.users_with("A", "train")).all()


def test_recommend_by_id_excludes_seen_items(tiny_source):
    from crossrec_lit.models import Popularity

    from conftest import quiet_trainer

    dm = InteractionDataModule(tiny_source, "B", batch_size=256)
    model = Popularity(dm.num_users, dm.num_items)
    quiet_trainer(max_epochs=1, limit_val_batches=0).fit(model, dm)
    user = dm.user_vocab.ids[0]
    recs = dm.recommend(model, [user], k=5, with_text=True)
    assert recs["rank"].tolist() == [1, 2, 3, 4, 5]
    seen = set(dm.table.frame.query("user == @user")["item"])
    assert not seen & set(recs["item"])
    assert recs["text"].str.len().gt(0).all()
    with pytest.raises(CrossRecError, match="unknown user"):
        dm.recommend(model, ["nobody"], k=5)


def test_split_seed_keeps_cold_start_folds_disjoint_across_run_seeds(tiny_source):
    tested = []
    for run_seed in range(5):
        dm = CrossDomainDataModule(tiny_source, "A", "B", split="cold_start", cold_start_share=0.2, cold_start_fold=run_seed, n_folds=5, split_seed=0, seed=run_seed)
        tested += dm.user_vocab.decode(dm.index.users_with("B", "test")).tolist()
    assert len(tested) == len(set(tested)) == dm.overlap.overlap_users


def test_new_item_negatives_come_from_known_items_only(tiny_source):
    dm = CrossDomainDataModule(tiny_source, "A", "B", split="new_items", new_item_share=0.2, batch_size=256, num_negatives=4)
    held_out = np.flatnonzero(dm.index.item_counts("B", "train") == 0)
    assert len(held_out) > 0
    negatives = torch.cat([b["target"]["negatives"].reshape(-1) for b, _, _ in dm.train_dataloader()])
    assert not np.isin(negatives.numpy(), held_out).any()


def test_drop_shared_users_leaves_two_separate_shops(tiny_source):
    dm = CrossDomainDataModule(tiny_source, "A", "B", drop_shared_users=True, min_overlap=0)
    assert dm.overlap.overlap_users == 0
    assert len(dm.overlap_users()) == 0
    with pytest.raises(CrossRecError, match="set min_overlap=0"):
        CrossDomainDataModule(tiny_source, "A", "B", drop_shared_users=True)


def test_eval_batches_stay_within_the_score_budget_for_huge_catalogues():
    from crossrec_lit.data.sampling import MAX_BATCH_SCORES, EvalBatches

    users = np.arange(1000)
    rows = np.arange(1000)

    def batches(n_items: int):
        truth = sp.csr_matrix((np.ones(1000), (rows, rows % n_items)), shape=(1000, n_items))
        return EvalBatches(users, truth, None, batch_size=512)

    assert batches(10_000).batch_size == 512  # the book's catalogues keep the size asked for
    huge = batches(2**21)
    assert huge.batch_size == MAX_BATCH_SCORES // 2**21 == 64
    seen = np.concatenate([b["users"].numpy() for b in huge])
    assert len(huge) == 16 and np.array_equal(seen, users)  # every user once, in order
