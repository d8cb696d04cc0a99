"""The contract every recommender in the package must meet (one parametrised test suite).

Add a model to CASES and it is checked for: score shapes, determinism under a seed, an identical
checkpoint round trip, seen items never recommended, and training through the DataModule it
is meant for.
"""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from conftest import quiet_trainer
from crossrec_lit.data import CrossDomainDataModule, InteractionDataModule
from crossrec_lit.models import BPRMF, MF, Popularity


def single(source):
    return InteractionDataModule(source, "B", batch_size=256, num_negatives=2, seed=0)


def cross(source):
    return CrossDomainDataModule(source, "A", "B", batch_size=256, num_negatives=2, seed=0, phase="both")


# name -> (model factory given the DataModule, DataModule factory, epochs)
CASES = {
    "Popularity": (lambda dm: Popularity(**dm.model_arguments_for(Popularity)), single, 1),
    "MF": (lambda dm: MF(dm.num_users, dm.num_items, embedding_dim=16, lr=0.01), single, 2),
    "BPRMF": (lambda dm: BPRMF(dm.num_users, dm.num_items, embedding_dim=16, lr=0.01), single, 2),
    "BPRMF-sparse": (lambda dm: BPRMF(dm.num_users, dm.num_items, embedding_dim=16, lr=0.01, optimizer="sparse_adam"), single, 2),
}


def register(name, model_factory, dm_factory, epochs=2):
    """Later model modules' tests call this to join the contract."""
    CASES[name] = (model_factory, dm_factory, epochs)


def train(name, source, seed=0):
    model_factory, dm_factory, epochs = CASES[name]
    dm = dm_factory(source)
    pl.seed_everything(seed, verbose=False)
    model = model_factory(dm)
    trainer = quiet_trainer(max_epochs=epochs, limit_val_batches=0)
    trainer.fit(model, dm)
    return model, dm, trainer


@pytest.fixture(params=sorted(CASES))
def case(request):
    return request.param


def test_shapes(case, tiny_source):
    model, dm, _ = train(case, tiny_source)
    users = torch.arange(5)
    full = model.full_scores(users)
    assert full.shape == (5, dm.num_items)
    pair = model.score(users, torch.arange(5))
    assert pair.shape == (5,)
    torch.testing.assert_close(pair.float(), full.float()[torch.arange(5), torch.arange(5)], rtol=1e-5, atol=1e-5)


def test_deterministic_under_a_seed(case, tiny_source):
    a, _, _ = train(case, tiny_source, seed=11)
    b, _, _ = train(case, tiny_source, seed=11)
    torch.testing.assert_close(a.full_scores(torch.arange(20)), b.full_scores(torch.arange(20)), rtol=0, atol=0)


def test_checkpoint_round_trip(case, tiny_source, tmp_path):
    model, dm, trainer = train(case, tiny_source)
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    loaded = type(model).load_from_checkpoint(path, weights_only=False)
    loaded.eval()
    model.eval()
    torch.testing.assert_close(loaded.full_scores(torch.arange(30)), model.full_scores(torch.arange(30)), rtol=0, atol=0)


def test_seen_items_are_never_recommended(case, tiny_source):
    model, dm, _ = train(case, tiny_source)
    users = list(dm.user_vocab.ids[:25])
    recs = dm.recommend(model, users, k=10)
    frame = dm.table.frame
    for user, group in recs.groupby("user"):
        seen = set(frame.loc[(frame["user"] == user) & (frame["domain"] == dm.target_domain), "item"])
        assert not seen & set(group["item"])


def test_validates_and_tests_with_full_ranking(case, tiny_source):
    model, dm, trainer = train(case, tiny_source)
    out = trainer.test(model, dm, verbose=False)[0]
    assert 0 <= out["test/ndcg@10"] <= 1 and 0 <= out["test/recall@20"] <= 1
    assert len(model.test_per_user) == len(dm.index.users_with(dm.target_domain, "test"))


def test_trains_with_the_cross_domain_datamodule(tiny_source):
    # single-domain models read only the target side of a cross-domain DataModule in phase "target"
    dm = CrossDomainDataModule(tiny_source, "A", "B", batch_size=256, phase="target")
    model = BPRMF(dm.num_users, dm.num_items, embedding_dim=8)
    quiet_trainer(max_epochs=1).fit(model, dm)
    assert model.full_scores(torch.arange(3)).shape == (3, dm.num_items)
