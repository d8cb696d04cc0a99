"""``item_bias``: the learned per-item popularity term of the dot-product models (MF, BPRMF,
TargetOnlyMF, SharedUserMF, DTCDR, EMCDR, PTUPCDR).

For every model: off adds no parameter and scores as before; on, ``score``, ``full_scores`` and
the training losses all use ``<u, v_j> + b_j``; the bias rows get ``l2_reg``; a short fit learns
the target store's popularity; checkpoints round-trip; ``sparse_adam`` steps the bias sparsely
where the model allows that optimiser at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr

from conftest import quiet_trainer
from crossrec_lit import CrossRecError
from crossrec_lit.data import CrossDomainDataModule
from crossrec_lit.models import BPRMF, DTCDR, EMCDR, MF, PTUPCDR, SharedUserMF, TargetOnlyMF
from crossrec_lit.transfer import LoadSourceWeights, PhaseSchedule

DIM = 8
SOURCE_MAPPING = {"user_emb": "source_user_emb", "item_emb": "source_item_emb"}
# Spearman(b, target training counts) after the fits below (3 target epochs on tiny_source),
# measured: 0.95-0.99 for every model. With the bias never stepped (requires_grad off) it is
# undefined (nan, which fails the check), and with the sign of the bias flipped in the training
# scores it is -0.95 to -0.99; 0.5 separates those with a wide margin.
MIN_SPEARMAN = 0.5


@dataclass
class Spec:
    cls: type
    phase: str  # the DataModule phase a fit starts in (mapping models switch to overlap)
    split: str = "leave_one_out"
    kwargs: dict = field(default_factory=dict)
    mapping: bool = False  # EMCDR/PTUPCDR: source weights loaded, target then overlap phase
    source_store: bool = False  # also trains on the source store, with a source item bias
    sparse_adam: bool = True  # the model is embedding-only, so sparse_adam can train it
    bce: bool = False  # pointwise BCE target loss instead of BPR


SPECS = {
    "MF": Spec(MF, "target", bce=True),
    "BPRMF": Spec(BPRMF, "target"),
    "TargetOnlyMF": Spec(TargetOnlyMF, "target", split="cold_start"),
    "SharedUserMF": Spec(SharedUserMF, "both", source_store=True),
    "DTCDR": Spec(DTCDR, "both", source_store=True),
    "DTCDR-bce": Spec(DTCDR, "both", kwargs={"loss_type": "bce"}, source_store=True, bce=True),
    "EMCDR": Spec(EMCDR, "target", split="cold_start", mapping=True, sparse_adam=False),
    "PTUPCDR": Spec(PTUPCDR, "target", split="cold_start", kwargs={"max_len": 10, "meta_dim": 16}, mapping=True, sparse_adam=False),
}
NAMES = sorted(SPECS)


def make_dm(source, spec: Spec, **kw) -> CrossDomainDataModule:
    settings = dict(split=spec.split, phase=spec.phase, batch_size=256, num_negatives=2, seed=0)
    if spec.split == "cold_start":
        settings["cold_start_share"] = 0.2
    return CrossDomainDataModule(source, "A", "B", **{**settings, **kw})


def make_model(spec: Spec, dm, seed: int = 0, **kw):
    pl.seed_everything(seed, verbose=False)
    return spec.cls(**dm.model_arguments_for(spec.cls), embedding_dim=DIM, lr=0.01, **{**spec.kwargs, **kw})


def target_bias(model) -> torch.nn.Embedding:
    return model.item_bias["target"] if isinstance(model, DTCDR) else model.item_bias


def source_bias(model) -> torch.nn.Embedding:
    return model.item_bias["source"] if isinstance(model, DTCDR) else model.source_item_bias


def target_loss(model, batch):
    return model.target_loss(batch) if hasattr(model, "target_loss") else model.loss(batch)


def dot_scores(model, users):
    """The score without any bias: the formula every model used before ``item_bias``."""
    return model.user_vectors(users) @ model.item_vectors().T


@pytest.fixture(scope="module")
def data(tiny_source):
    """A bound-data DataModule per spec (built once; fits build their own, as phases change them)."""

    @lru_cache(maxsize=None)
    def get(name):
        return make_dm(tiny_source, SPECS[name])

    return get


def bound(name, data, **kw):
    model = make_model(SPECS[name], data(name), **kw)
    model.bind_data(data(name))
    return model.eval()


# ---------------------------------------------------------------------- off: nothing changes
@pytest.mark.parametrize("name", NAMES)
def test_off_adds_no_parameter_and_scores_by_the_dot_product(name, data):
    model = bound(name, data)
    assert model.hparams.item_bias is False
    assert not [k for k in model.state_dict() if "item_bias" in k]
    users = torch.arange(model.num_users)
    items = torch.arange(model.num_items)
    with torch.no_grad():
        torch.testing.assert_close(model.full_scores(users), dot_scores(model, users), rtol=0, atol=0)
        pairs = (model.user_vectors(users[:, None]) * model.item_vectors(items[None, :])).sum(-1)
        torch.testing.assert_close(model.score(users[:, None], items[None, :]), pairs, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["BPRMF", "SharedUserMF", "DTCDR", "EMCDR"])
def test_a_checkpoint_from_before_item_bias_loads(name, data, tmp_path):
    # an older checkpoint: no item_bias among the hyperparameters, no bias tensor in the state
    model = bound(name, data)
    hparams = {k: v for k, v in model.hparams.items() if k != "item_bias"}
    path = tmp_path / "old.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": hparams, "pytorch-lightning_version": pl.__version__}, path)
    loaded = type(model).load_from_checkpoint(path, weights_only=False).eval()
    assert loaded.item_bias is None
    users = torch.arange(model.num_users)
    with torch.no_grad():
        torch.testing.assert_close(loaded.full_scores(users), model.full_scores(users), rtol=0, atol=0)


def test_item_bias_must_be_a_bool(data):
    dm = data("BPRMF")
    for cls in (MF, SharedUserMF, DTCDR, EMCDR, PTUPCDR):
        with pytest.raises(CrossRecError, match="item_bias must be true or false"):
            cls(**dm.model_arguments_for(cls), item_bias="false")


# ---------------------------------------------------------------------- on: scoring
@pytest.mark.parametrize("name", NAMES)
def test_scores_add_the_target_item_bias_everywhere(name, data):
    model = bound(name, data, item_bias=True)
    table = target_bias(model)
    assert table.weight.shape == (model.num_items, 1) and not table.weight.any()  # zero start
    users, items = torch.arange(model.num_users), torch.arange(model.num_items)
    with torch.no_grad():
        table.weight.normal_(generator=torch.Generator().manual_seed(0))
        full = model.full_scores(users)
        torch.testing.assert_close(full, dot_scores(model, users) + table.weight.T, rtol=0, atol=0)
        torch.testing.assert_close(model.score(users[:, None], items[None, :]), full, rtol=1e-5, atol=1e-5)
        assert model.score(users[:3, None], items[:6].view(3, 2)).shape == (3, 2)
        # a large enough bias puts its item first for every user, cold users included
        top = 7
        table.weight[top] = full.abs().max() * 4 + 10
        assert (model.full_scores(users).argmax(1) == top).all()
        assert (model.recommend(users, k=1)[0].squeeze(1) == top).all()


# ---------------------------------------------------------------------- on: losses
def sample_batch(dm, store: str, n: int = 32) -> dict:
    a = dm.index.arrays(dm.target_domain if store == "target" else dm.source_domain, "train")
    g = torch.Generator().manual_seed(1)
    rows = torch.randperm(len(a["users"]), generator=g)[:n]
    num_items = dm.num_items if store == "target" else dm.num_source_items
    return {
        "users": torch.from_numpy(a["users"])[rows].long(),
        "items": torch.from_numpy(a["items"])[rows].long(),
        "negatives": torch.randint(num_items, (n, 3), generator=g),
    }


def expected_bias_only_loss(bias, batch, bce: bool) -> torch.Tensor:
    b_pos, b_neg = bias[batch["items"]], bias[batch["negatives"]]
    if bce:
        logits = torch.cat([b_pos, b_neg.reshape(-1)])
        return F.binary_cross_entropy_with_logits(logits, torch.cat([torch.ones_like(b_pos), torch.zeros_like(b_neg.reshape(-1))]))
    return -F.logsigmoid(b_pos.unsqueeze(1) - b_neg).mean()


def zero_factors(model) -> None:
    """Zero every user and item vector (transferred ones included), so that a loss is its bias
    terms plus the L2 of the bias rows."""
    for module in model.modules():
        if isinstance(module, torch.nn.Embedding) and module.embedding_dim == DIM:
            module.weight.zero_()


@pytest.mark.parametrize("name", NAMES)
def test_losses_use_the_bias_difference_and_penalise_its_rows(name, data):
    spec, dm = SPECS[name], data(name)
    model = bound(name, data, item_bias=True, l2_reg=0.05)
    stores = [("target", target_bias(model), lambda b: target_loss(model, b))]
    if spec.source_store:
        stores.append(("source", source_bias(model), model.source_loss))
    with torch.no_grad():
        zero_factors(model)
        for store, table, loss_fn in stores:
            table.weight.normal_(generator=torch.Generator().manual_seed(2))
            batch = sample_batch(dm, store)
            bias = table.weight.squeeze(1)
            expected = expected_bias_only_loss(bias, batch, spec.bce)
            rows = bias[batch["items"]].square().sum() + bias[batch["negatives"]].square().sum()
            torch.testing.assert_close(loss_fn(batch), expected + 0.05 * rows / len(batch["users"]), rtol=1e-6, atol=1e-6)
            model.l2_reg = 0.0
            torch.testing.assert_close(loss_fn(batch), expected, rtol=1e-6, atol=1e-6)
            model.l2_reg = 0.05
    if spec.cls is PTUPCDR:
        # the overlap task scores with the same biases (no L2 there, as for its vectors)
        batch = sample_batch(dm, "target")
        with torch.no_grad():
            expected = expected_bias_only_loss(target_bias(model).weight.squeeze(1), batch, bce=False)
            torch.testing.assert_close(model.overlap_loss(batch), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("train_target_items", [False, True])
def test_ptupcdr_overlap_task_moves_the_bias_only_with_the_target_items(train_target_items, data):
    model = bound("PTUPCDR", data, item_bias=True, train_target_items=train_target_items).train()
    model.overlap_loss(sample_batch(data("PTUPCDR"), "target")).backward()
    grad = model.item_bias.weight.grad
    assert (grad is not None and grad.abs().sum() > 0) == train_target_items
    assert (model.item_emb.weight.grad is not None) == train_target_items


# ---------------------------------------------------------------------- on: training
@pytest.fixture(scope="module")
def source_checkpoint(tiny_source, tmp_path_factory):
    """A source BPRMF WITH its own item bias, over the cold-start indices the mapping models use."""
    dm = make_dm(tiny_source, Spec(BPRMF, "source", split="cold_start"), eval_domain="source")
    model = make_model(Spec(BPRMF, "source"), dm, item_bias=True)
    trainer = quiet_trainer(max_epochs=2, limit_val_batches=0)
    trainer.fit(model, dm)
    path = tmp_path_factory.mktemp("item_bias_src") / "source.ckpt"
    trainer.save_checkpoint(path)
    return path


TARGET_EPOCHS = 3


def fit(name, source, checkpoint, **kw):
    """Train ``name`` with item_bias on: TARGET_EPOCHS epochs (then one overlap epoch for the
    mapping models, their source MF loaded by LoadSourceWeights)."""
    spec = SPECS[name]
    dm = make_dm(source, spec)
    model = make_model(spec, dm, item_bias=True, l2_reg=1e-4, **kw)
    loader = None
    if spec.mapping:
        loader = LoadSourceWeights(str(checkpoint), mapping=SOURCE_MAPPING)
        trainer = quiet_trainer(
            max_epochs=TARGET_EPOCHS + 1,
            limit_val_batches=0,
            reload_dataloaders_every_n_epochs=1,
            callbacks=[loader, PhaseSchedule({0: "target", TARGET_EPOCHS: "overlap"})],
        )
    else:
        trainer = quiet_trainer(max_epochs=TARGET_EPOCHS, limit_val_batches=0)
    trainer.fit(model, dm)
    return model.eval(), dm, trainer, loader


@pytest.fixture(scope="module")
def trained(tiny_source, source_checkpoint):
    @lru_cache(maxsize=None)
    def get(name):
        return fit(name, tiny_source, source_checkpoint)

    return get


def target_popularity(dm) -> np.ndarray:
    return np.bincount(dm.index.arrays(dm.target_domain, "train")["items"], minlength=dm.num_items)


@pytest.mark.parametrize("name", NAMES)
def test_a_short_fit_learns_the_target_popularity(name, trained):
    model, dm, _, _ = trained(name)
    bias = target_bias(model).weight.detach().squeeze(1).numpy()
    rho = spearmanr(bias, target_popularity(dm)).statistic
    print(f"\n{name}: Spearman(item bias, target training count) = {rho:.3f}")
    assert rho > MIN_SPEARMAN


@pytest.mark.parametrize("name", [n for n in NAMES if SPECS[n].mapping])
def test_load_source_weights_leaves_the_item_biases_alone(name, trained, source_checkpoint):
    model, _, _, loader = trained(name)
    report = loader.report
    assert sorted(report["transferred"]) == ["source_item_emb.weight", "source_user_emb.weight"]
    assert report["shape_mismatch"] == [] and report["not_in_source"] == []
    assert "item_bias.weight" in report["unused_source"]  # the source model's own bias ranks source items
    source_bias_ = torch.load(source_checkpoint, weights_only=False)["state_dict"]["item_bias.weight"]
    assert source_bias_.shape[0] == model.num_source_items != model.num_items


@pytest.mark.parametrize("name", NAMES)
def test_checkpoint_round_trip_with_item_bias(name, trained, tmp_path):
    model, dm, trainer, _ = trained(name)
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    loaded = type(model).load_from_checkpoint(path, weights_only=False).eval()
    assert loaded.hparams.item_bias is True
    users = torch.arange(dm.num_users)
    with torch.no_grad():
        torch.testing.assert_close(target_bias(loaded).weight, target_bias(model).weight, rtol=0, atol=0)
        torch.testing.assert_close(loaded.full_scores(users), model.full_scores(users), rtol=0, atol=0)


class SparseGrads(pl.Callback):
    def __init__(self, tables):
        self.tables, self.sparse = tables, []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.sparse.append([t(pl_module).weight.grad.is_sparse for t in self.tables])


@pytest.mark.parametrize("name", [n for n in NAMES if SPECS[n].sparse_adam])
def test_sparse_adam_steps_the_bias(name, tiny_source):
    spec = SPECS[name]
    dm = make_dm(tiny_source, spec)
    model = make_model(spec, dm, item_bias=True, l2_reg=1e-4, optimizer="sparse_adam")
    tables = [target_bias, source_bias] if spec.source_store else [target_bias]
    capture = SparseGrads(tables)
    quiet_trainer(max_steps=5, limit_val_batches=0, callbacks=[capture]).fit(model, dm)
    assert capture.sparse and all(all(step) for step in capture.sparse)
    for table in tables:
        assert table(model).weight.any()


@pytest.mark.parametrize("name", [n for n in NAMES if not SPECS[n].sparse_adam])
def test_mapping_models_keep_their_sparse_adam_refusal(name, data):
    # their mapping networks are dense; the bias itself is a sparse table like the embeddings
    model = bound(name, data, item_bias=True, optimizer="sparse_adam")
    assert model.item_bias.sparse
    with pytest.raises(CrossRecError, match="embedding-only models"):
        model.configure_optimizers()
