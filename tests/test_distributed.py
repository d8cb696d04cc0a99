"""Lightning DDP on CPU: two processes train and evaluate exactly like one.

Every rank builds the same global batch (shuffling and negatives are keyed by seed, epoch and
batch) and keeps its share; DDP averages the ranks' gradients, which equals the full batch's
mean gradient; validation users are split across ranks and the metric sums are reduced by
torchmetrics. So the metrics of ``devices=2`` match ``devices=1`` up to float summation order.
"""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from crossrec_lit.data import InteractionDataModule, Synthetic
from crossrec_lit.models import BPRMF, Popularity

pytestmark = [
    pytest.mark.slow,
    # ddp_spawn warns that it is slower than ddp; the spawn variant is what runs inside pytest
    pytest.mark.filterwarnings("ignore:.*ddp_spawn.*:UserWarning"),
    pytest.mark.filterwarnings("ignore:.*num_workers.*:UserWarning"),
]


def data():
    return InteractionDataModule(Synthetic(n_users=500, n_items=(150, 120), seed=5), "B", batch_size=256, eval_batch_size=64, seed=0)


def trainer(devices: int, **kwargs):
    return pl.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp_spawn" if devices > 1 else "auto",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        deterministic=True,
        **kwargs,
    )


def fit(devices: int, optimizer: str):
    torch.set_num_threads(1)
    dm = data()
    pl.seed_everything(0, verbose=False)
    model = BPRMF(dm.num_users, dm.num_items, embedding_dim=8, lr=0.05 if optimizer == "sgd" else 0.01, optimizer=optimizer)
    t = trainer(devices, max_epochs=3)
    t.fit(model, dm)
    return {k: float(v) for k, v in t.callback_metrics.items() if k.startswith("val/")}, model


def test_training_on_two_processes_matches_one():
    # plain SGD: each step applies exactly the averaged gradient, so the runs differ only by
    # float summation order (Adam's normalisation would amplify those last-bit differences)
    one, _ = fit(1, "sgd")
    two, _ = fit(2, "sgd")
    assert one and one.keys() == two.keys()
    for key in one:
        assert two[key] == pytest.approx(one[key], abs=1e-6), key


def test_evaluation_gathers_across_processes(tmp_path):
    _, model = fit(1, "adam")
    path = tmp_path / "model.ckpt"
    torch.save(model.state_dict(), path)
    results = []
    for devices in (1, 2):
        loaded = BPRMF(model.num_users, model.num_items, embedding_dim=8)
        loaded.load_state_dict(torch.load(path))
        results.append(trainer(devices).validate(loaded, data(), verbose=False)[0])
    for key in results[0]:
        assert results[1][key] == pytest.approx(results[0][key], abs=1e-7), key


def test_counting_baselines_refuse_ddp_with_a_fix():
    from crossrec_lit import CrossRecError

    dm = data()
    with pytest.raises(Exception, match="nothing to train") as info:
        trainer(2, max_epochs=1).fit(Popularity(dm.num_users, dm.num_items), dm)
    assert "Fix:" in str(info.value) or isinstance(info.value, CrossRecError)


@pytest.mark.parametrize("stage", ["validate", "test"])
def test_each_evaluation_starts_from_its_own_zeroed_sums(stage):
    # ddp_spawn moves every tensor of the pickled model into shared memory and Lightning copies
    # back only parameters and buffers; the accumulators' sums stay shared between the ranks.
    # Here a sibling's additions are simulated by shared sums that are not zero.
    dm = data()
    torch.manual_seed(0)
    model = BPRMF(dm.num_users, dm.num_items, embedding_dim=8)
    clean = getattr(trainer(1), stage)(model, dm, verbose=False)[0]
    metrics = model.val_metrics if stage == "validate" else model.test_metrics
    metrics.sums = torch.full_like(metrics.sums, 7.0).share_memory_()
    metrics.count = torch.full_like(metrics.count, 3.0).share_memory_()
    again = getattr(trainer(1), stage)(model, dm, verbose=False)[0]
    assert again == clean
    assert not metrics.sums.is_shared()
