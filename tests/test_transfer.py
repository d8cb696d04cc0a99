"""Transfer callbacks: weight loading, freezing, lambda schedules, L2-SP, the guard, phases."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from conftest import quiet_trainer
from crossrec_lit import CrossRecError
from crossrec_lit.data import CrossDomainDataModule
from crossrec_lit.models import BPRMF, CrossDomainModule, FactorModel
from crossrec_lit.transfer import FreezeUnfreeze, L2SP, LoadSourceWeights, NegativeTransferGuard, PhaseSchedule, SourceWeightSchedule


class ToyJoint(CrossDomainModule, FactorModel):
    """A minimal joint model (shared users) that records which parts each step trained on."""

    def __init__(self, num_users, num_items, num_source_items, dim=8, **kwargs):
        super().__init__(num_users, num_items, num_source_items, **kwargs)
        self.save_hyperparameters()
        self.user_emb = self.make_embedding(num_users, dim)
        self.item_emb = self.make_embedding(num_items, dim)
        self.source_item_emb = self.make_embedding(num_source_items, dim)
        self.parts_seen: list[tuple[int, tuple[str, ...]]] = []
        self.weights_seen: list[float] = []

    def user_vectors(self, users):
        return self.user_emb(users)

    def item_vectors(self, items=None):
        return self.item_emb.weight if items is None else self.item_emb(items)

    def _bpr(self, items, batch):
        u = self.user_emb(batch["users"])
        diff = (u * items(batch["items"])).sum(-1, keepdim=True) - (u.unsqueeze(1) * items(batch["negatives"])).sum(-1)
        return -F.logsigmoid(diff).mean()

    def source_loss(self, batch):
        return self._bpr(self.source_item_emb, batch)

    def target_loss(self, batch):
        return self._bpr(self.item_emb, batch)

    def overlap_loss(self, batch):
        return self._bpr(self.item_emb, batch)

    def training_step(self, batch, batch_idx):
        self.parts_seen.append((self.current_epoch, tuple(sorted(batch))))
        self.weights_seen.append(self.source_weight)
        return super().training_step(batch, batch_idx)


def dm_for(source, **kw):
    return CrossDomainDataModule(source, "A", "B", batch_size=256, **kw)


@pytest.fixture(scope="module")
def source_checkpoint(tiny_source, tmp_path_factory):
    dm = dm_for(tiny_source, phase="source", eval_domain="source")
    pl.seed_everything(0, verbose=False)
    model = BPRMF(dm.num_users, dm.num_items, embedding_dim=8, lr=0.01)
    trainer = quiet_trainer(max_epochs=2, limit_val_batches=0)
    trainer.fit(model, dm)
    path = tmp_path_factory.mktemp("src") / "source.ckpt"
    trainer.save_checkpoint(path)
    return path, model


def toy(dm, **kw):
    return ToyJoint(dm.num_users, dm.num_items, dm.num_source_items, **kw)


def test_load_source_weights_by_mapping(tiny_source, source_checkpoint):
    path, source_model = source_checkpoint
    dm = dm_for(tiny_source, phase="both")
    model = toy(dm)
    cb = LoadSourceWeights(str(path), mapping={"user_emb": "user_emb", "item_emb": "source_item_emb"})
    quiet_trainer(max_epochs=1, limit_train_batches=0, limit_val_batches=0, callbacks=[cb]).fit(model, dm)
    assert sorted(cb.report["transferred"]) == ["source_item_emb.weight", "user_emb.weight"]
    torch.testing.assert_close(model.source_item_emb.weight, source_model.item_emb.weight)
    torch.testing.assert_close(model.user_emb.weight, source_model.user_emb.weight)


def test_load_source_weights_refuses_mismatches(tiny_source, source_checkpoint, tmp_path):
    path, _ = source_checkpoint
    dm = dm_for(tiny_source, phase="both")
    with pytest.raises(CrossRecError, match="shape mismatches"):
        # a target item table cannot take the source item table (different catalogues)
        LoadSourceWeights(str(path), mapping={"item_emb": "item_emb"}).load(toy(dm), torch.load(path, weights_only=False)["state_dict"])
    with pytest.raises(CrossRecError, match="no weight of .* matches"):
        LoadSourceWeights(str(path)).load(torch.nn.Linear(2, 2), torch.load(path, weights_only=False)["state_dict"])
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CrossRecError, match="unreadable"):
        quiet_trainer(max_epochs=1, callbacks=[LoadSourceWeights(str(bad))]).fit(toy(dm), dm)
    with pytest.raises(CrossRecError, match="does not exist"):
        quiet_trainer(max_epochs=1, callbacks=[LoadSourceWeights(str(tmp_path / "none.ckpt"))]).fit(toy(dm), dm)


def test_freeze_then_unfreeze(tiny_source):
    dm = dm_for(tiny_source, phase="both")
    pl.seed_everything(0, verbose=False)
    model = toy(dm, lr=0.05)
    start = model.user_emb.weight.detach().clone()
    snapshots = {}

    class Snap(pl.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            snapshots[trainer.current_epoch] = pl_module.user_emb.weight.detach().clone()

    cb = FreezeUnfreeze(["user_emb"], unfreeze_at_epoch=2, lr_factor=0.5)
    quiet_trainer(max_epochs=3, limit_val_batches=0, callbacks=[cb, Snap()]).fit(model, dm)
    assert torch.equal(snapshots[0], start) and torch.equal(snapshots[1], start)
    assert not torch.equal(snapshots[2], start)
    with pytest.raises(CrossRecError, match="has no module"):
        quiet_trainer(max_epochs=1, callbacks=[FreezeUnfreeze(["encoder"])]).fit(toy(dm), dm)


def test_source_weight_schedules():
    assert [SourceWeightSchedule("linear", 1.0, 0.0, epochs=4).value(e) for e in range(6)] == [1.0, 0.75, 0.5, 0.25, 0.0, 0.0]
    assert [SourceWeightSchedule("step", 1.0, step_every=2, gamma=0.5).value(e) for e in range(5)] == [1, 1, 0.5, 0.5, 0.25]
    assert SourceWeightSchedule("constant", 0.3).value(9) == 0.3
    with pytest.raises(CrossRecError, match="unknown schedule"):
        SourceWeightSchedule("cosine")


def test_schedule_drives_lambda_in_training(tiny_source):
    dm = dm_for(tiny_source, phase="both")
    model = toy(dm)
    quiet_trainer(max_epochs=3, limit_val_batches=0, limit_train_batches=1, callbacks=[SourceWeightSchedule("linear", 1.0, 0.0, epochs=2)]).fit(model, dm)
    assert model.weights_seen == [1.0, 0.5, 0.0]


def test_l2sp_gradient_equals_the_penalised_loss():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3))
    cb = L2SP(alpha=0.7, modules=["0"])

    class Holder(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = net

    holder = Holder()
    cb.module_names = ["net"]
    cb.on_fit_start(None, holder)
    with torch.no_grad():
        net[0].weight.add_(0.3)  # move away from the reference
    x = torch.randn(5, 4)
    loss = net(x).square().mean()
    expected = torch.autograd.grad(loss + cb.penalty(holder), net[0].weight, retain_graph=True)[0]
    net.zero_grad()
    loss.backward()
    cb.on_after_backward(None, holder)
    torch.testing.assert_close(net[0].weight.grad, expected)


def test_negative_transfer_guard_warns_and_stops():
    guard = NegativeTransferGuard(baseline=0.05, patience=2, action="stop")

    class Trainer:
        sanity_checking = False
        should_stop = False
        current_epoch = 0
        callback_metrics = {}

    t = Trainer()
    for epoch, value in enumerate([0.06, 0.04, 0.03]):
        t.current_epoch, t.callback_metrics = epoch, {"val/ndcg@10": torch.tensor(value)}
        if epoch == 2:
            with pytest.warns(UserWarning, match="negative transfer"):
                guard.on_validation_end(t, None)
        else:
            guard.on_validation_end(t, None)
    assert guard.triggered and t.should_stop
    restored = NegativeTransferGuard(baseline=0.05)
    restored.load_state_dict(guard.state_dict())
    assert restored.triggered and restored.history == guard.history
    with pytest.raises(CrossRecError, match="finite number"):
        NegativeTransferGuard(baseline=float("nan"))


def test_phase_schedule_switches_what_is_served(tiny_source):
    dm = dm_for(tiny_source, phase="target")
    model = toy(dm)
    sched = PhaseSchedule({0: "source", 1: "both", 2: "overlap"})
    quiet_trainer(max_epochs=3, limit_val_batches=0, limit_train_batches=2, reload_dataloaders_every_n_epochs=1, callbacks=[sched]).fit(model, dm)
    by_epoch = {}
    for epoch, parts in model.parts_seen:
        by_epoch.setdefault(epoch, set()).add(parts)
    assert by_epoch == {0: {("source",)}, 1: {("source", "target")}, 2: {("overlap",)}}
    with pytest.raises(CrossRecError, match="reload_dataloaders_every_n_epochs=1"):
        quiet_trainer(max_epochs=1, callbacks=[PhaseSchedule({0: "source"})]).fit(toy(dm), dm)
