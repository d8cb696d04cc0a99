"""The contract every recommender must meet, as reusable checks.

A model test module builds a ``Case`` (how to make the DataModule and the model, how long to
train) and calls :func:`check_contract`, or the single checks, so that every model in the package
is held to the same rules: score shapes, determinism under a seed, an identical checkpoint round
trip, seen items never recommended, and full-ranking test through its DataModule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import pytorch_lightning as pl
import torch

from conftest import quiet_trainer


@dataclass
class Case:
    make_model: Callable  # (datamodule) -> model
    make_data: Callable  # (source) -> datamodule
    epochs: int = 2
    trainer_kwargs: dict = field(default_factory=dict)
    callbacks: Callable = lambda: []  # () -> list of callbacks


def train(case: Case, source, seed: int = 0):
    dm = case.make_data(source)
    pl.seed_everything(seed, verbose=False)
    model = case.make_model(dm)
    trainer = quiet_trainer(max_epochs=case.epochs, limit_val_batches=0, callbacks=case.callbacks(), **case.trainer_kwargs)
    trainer.fit(model, dm)
    return model, dm, trainer


def check_shapes(case, source):
    model, dm, _ = train(case, source)
    model.eval()
    users = torch.arange(5)
    full = model.full_scores(users)
    assert full.shape == (5, dm.num_items)
    pair = model.score(users, torch.arange(5))
    assert pair.shape == (5,)
    torch.testing.assert_close(pair.float(), full.float()[torch.arange(5), torch.arange(5)], rtol=1e-4, atol=1e-5)


def check_determinism(case, source):
    a, _, _ = train(case, source, seed=11)
    b, _, _ = train(case, source, seed=11)
    a.eval(), b.eval()
    torch.testing.assert_close(a.full_scores(torch.arange(20)), b.full_scores(torch.arange(20)), rtol=0, atol=0)


def check_checkpoint_round_trip(case, source, tmp_path):
    model, dm, trainer = train(case, source)
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    loaded = type(model).load_from_checkpoint(path, weights_only=False)
    loaded.eval()
    model.eval()
    users = torch.arange(min(30, dm.num_users))
    torch.testing.assert_close(loaded.full_scores(users), model.full_scores(users), rtol=0, atol=0)


def check_seen_items_masked(case, source):
    model, dm, _ = train(case, source)
    users = list(dm.user_vocab.ids[:25])
    recs = dm.recommend(model, users, k=10)
    frame = dm.table.frame
    for user, group in recs.groupby("user"):
        seen = set(frame.loc[(frame["user"] == user) & (frame["domain"] == dm.eval_domain), "item"])
        assert not seen & set(group["item"])


def check_full_ranking_test(case, source):
    model, dm, trainer = train(case, source)
    out = trainer.test(model, dm, verbose=False)[0]
    assert 0 <= out["test/ndcg@10"] <= 1 and 0 <= out["test/recall@20"] <= 1
    assert len(model.test_per_user) == len(dm.index.users_with(dm.eval_domain, "test"))


ALL_CHECKS = {
    "shapes": check_shapes,
    "determinism": check_determinism,
    "checkpoint": check_checkpoint_round_trip,
    "seen_masked": check_seen_items_masked,
    "full_ranking": check_full_ranking_test,
}


def check_contract(name: str, case: Case, source, tmp_path) -> None:
    """Run one named check (use with pytest.mark.parametrize over ALL_CHECKS)."""
    check = ALL_CHECKS[name]
    if name == "checkpoint":
        check(case, source, tmp_path)
    else:
        check(case, source)
