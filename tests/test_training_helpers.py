"""The hand-run fit helpers of crossrec_lit.training: keep the best validation epoch, name it, test it."""

from __future__ import annotations

import pytorch_lightning as pl
import pytest
import torch

from crossrec_lit.data import InteractionDataModule
from crossrec_lit.models import BPRMF
from crossrec_lit.training import NoProfiler, best_checkpoint, checkpoint_epoch, evaluate_test, quiet_trainer


def test_best_epoch_is_kept_named_and_tested(tiny_source, tmp_path):
    dm = InteractionDataModule(tiny_source, "B", split="leave_one_out", batch_size=256, seed=0)
    pl.seed_everything(0, verbose=False)
    model = BPRMF(dm.num_users, dm.num_items, embedding_dim=8, lr=0.05)
    keep = best_checkpoint(tmp_path / "bpr")
    trainer = quiet_trainer(4, [keep], deterministic=True)
    trainer.fit(model, datamodule=dm)
    assert keep.best_model_path == str(tmp_path / "bpr" / "best.ckpt")
    assert 1 <= checkpoint_epoch(keep.best_model_path) <= 4
    # the kept weights are those of the best validation, whatever the last epoch was: testing them
    # through the helper equals Lightning's own test of that checkpoint, and leaves them in the model
    with torch.no_grad():
        model.user_emb.weight.zero_()  # whatever the model holds now is replaced by the checkpoint
    ours = evaluate_test(model, dm, keep.best_model_path)
    theirs = quiet_trainer(1).test(BPRMF.load_from_checkpoint(keep.best_model_path, weights_only=False), datamodule=dm, verbose=False)[0]
    assert ours["ndcg@10"] == pytest.approx(theirs["test/ndcg@10"], abs=1e-7) and "test/ndcg@10" not in ours
    saved = torch.load(keep.best_model_path, map_location="cpu", weights_only=False)
    torch.testing.assert_close(model.state_dict()["user_emb.weight"], saved["state_dict"]["user_emb.weight"])
    # weights only: Adam's moments (twice the tables) are not written, as nothing resumes from it
    assert "optimizer_states" not in saved
    assert model.test_per_user is not None and len(model.test_per_user) > 0


def test_quiet_trainer_hooks_run_under_a_shared_no_op_profile():
    trainer = quiet_trainer(1)
    assert isinstance(trainer.profiler, NoProfiler)
    first, second = trainer.profiler.profile("a"), trainer.profiler.profile("b")
    assert first is second  # one context for every hook, not a new generator per call
    with first, second:  # re-entrant, nested as Lightning nests its hooks
        pass
    assert isinstance(quiet_trainer(1, profiler="simple").profiler, pl.profilers.SimpleProfiler)


def test_lightning_hook_name_bypasses_module_setattr_without_changing_what_it_reads(tiny_source, monkeypatch):
    dm = InteractionDataModule(tiny_source, "B", split="leave_one_out", batch_size=256, seed=0)
    model = BPRMF(dm.num_users, dm.num_items, embedding_dim=8)
    extra = torch.nn.Linear(2, 2)
    through_module = []
    module_setattr = torch.nn.Module.__setattr__

    def recording(self, name, value):
        through_module.append(name)
        module_setattr(self, name, value)

    monkeypatch.setattr(torch.nn.Module, "__setattr__", recording)
    model._current_fx_name = "training_step"
    assert model._current_fx_name == "training_step" and through_module == []
    model.extra = extra  # every other name still goes through nn.Module
    assert through_module == ["extra"] and "extra" in model._modules
