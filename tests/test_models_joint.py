"""Cross-domain baselines and joint models: the shared contract, the joint objective's gradient,
exact counts on hand-made tables, and the cold-start benefit of sharing user vectors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch

from contract import ALL_CHECKS, Case, check_contract
from conftest import quiet_trainer
from crossrec_lit import CrossRecError
from crossrec_lit.data import CrossDomainDataModule, InteractionDataModule, InteractionTable, Synthetic, TableSource, save_split
from crossrec_lit.models.baselines import CrossDomainCooccurrence, OverlapPopularity, TargetOnlyMF
from crossrec_lit.models.cmf import CMF
from crossrec_lit.models.shared import SharedUserMF


def cross(phase: str, split: str = "leave_one_out"):
    def make(source):
        return CrossDomainDataModule(source, "A", "B", split=split, phase=phase, batch_size=256, num_negatives=2, seed=0)

    return make


def build(cls, **kwargs):
    return lambda dm: cls(**dm.model_arguments_for(cls), **kwargs)


CASES = {
    "TargetOnlyMF": Case(build(TargetOnlyMF, embedding_dim=16, lr=0.01), cross("target")),
    "TargetOnlyMF-cold": Case(build(TargetOnlyMF, embedding_dim=16, lr=0.01), cross("target", "cold_start")),
    "OverlapPopularity": Case(build(OverlapPopularity), cross("target"), epochs=1),
    "CrossDomainCooccurrence": Case(build(CrossDomainCooccurrence), cross("source", "cold_start"), epochs=1),
    "SharedUserMF": Case(build(SharedUserMF, embedding_dim=16, lr=0.01, l2_reg=1e-4), cross("both")),
    "CMF": Case(build(CMF, embedding_dim=16, lr=0.01, alpha=0.5), cross("both")),
}


@pytest.mark.parametrize("check", sorted(ALL_CHECKS))
@pytest.mark.parametrize("model", sorted(CASES))
def test_contract(model, check, tiny_source, tmp_path):
    check_contract(check, CASES[model], tiny_source, tmp_path)


# ---------------------------------------------------------------------------------------------
# the joint objective, checked on the gradient of one real training step
# ---------------------------------------------------------------------------------------------
class CaptureStep(pl.Callback):
    """Keeps the first batch, the weights before the step and the shared table's gradient."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.batch = {part: {k: v.clone() for k, v in sub.items()} for part, sub in batch.items()}
        self.state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.grad = pl_module.user_emb.weight.grad.detach().clone()


def one_step(model, dm) -> CaptureStep:
    capture = CaptureStep()
    quiet_trainer(max_steps=1, limit_val_batches=0, callbacks=[capture]).fit(model, dm)
    assert set(capture.batch) == {"source", "target"}
    return capture


def part_grads(model, capture):
    model.load_state_dict(capture.state)
    table = model.user_emb.weight
    (g_source,) = torch.autograd.grad(model.source_loss(capture.batch["source"]), table)
    (g_target,) = torch.autograd.grad(model.target_loss(capture.batch["target"]), table)
    assert g_source.abs().sum() > 0 and g_target.abs().sum() > 0
    return g_source, g_target


@pytest.mark.parametrize("lam", [0.0, 0.3, 1.0, 2.0])
def test_shared_user_gradient_is_lambda_source_plus_target(lam, tiny_source):
    dm = cross("both")(tiny_source)
    pl.seed_everything(0, verbose=False)
    model = SharedUserMF(**dm.model_arguments_for(SharedUserMF), embedding_dim=8, l2_reg=1e-3, source_weight=lam)
    capture = one_step(model, dm)
    g_source, g_target = part_grads(model, capture)
    torch.testing.assert_close(capture.grad, lam * g_source + g_target, rtol=0, atol=1e-6)
    total, _ = model.joint_loss(capture.batch)
    expected = lam * model.source_loss(capture.batch["source"]) + model.target_loss(capture.batch["target"])
    torch.testing.assert_close(total, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("implicit_loss", ["bce", "squared"])
@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 1.0])
def test_cmf_gradient_is_alpha_weighted(alpha, implicit_loss, tiny_source):
    dm = cross("both")(tiny_source)
    pl.seed_everything(0, verbose=False)
    model = CMF(**dm.model_arguments_for(CMF), embedding_dim=8, alpha=alpha, implicit_loss=implicit_loss, l2_reg=1e-3)
    assert model.source_weight == model.alpha == alpha
    capture = one_step(model, dm)
    g_source, g_target = part_grads(model, capture)
    torch.testing.assert_close(capture.grad, alpha * g_source + (1 - alpha) * g_target, rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# cold-start users: sharing the user table transfers
# ---------------------------------------------------------------------------------------------
def test_shared_users_beat_target_only_on_cold_start_users():
    # domain_shift=0: one taste per user in both stores. Checked on seeds 0, 1, 2 (NDCG@10 for
    # SharedUserMF / TargetOnlyMF: 0.291/0.171, 0.330/0.197, 0.288/0.174); the test runs seed 0.
    source = Synthetic(n_users=1500, n_items=(300, 250), overlap=0.8, domain_shift=0.0, interactions_per_user=(15, 10), seed=0)
    ndcg = {}
    for cls, phase in ((TargetOnlyMF, "target"), (SharedUserMF, "both")):
        dm = CrossDomainDataModule(source, "A", "B", split="cold_start", phase=phase, batch_size=512, num_negatives=1, seed=0)
        pl.seed_everything(0, verbose=False)
        model = cls(**dm.model_arguments_for(cls), embedding_dim=32, lr=0.02)
        trainer = quiet_trainer(max_epochs=4, limit_val_batches=0)
        trainer.fit(model, dm)
        out = trainer.test(model, dm, verbose=False)[0]
        ndcg[cls.__name__] = out["test/ndcg@10"]
        # every test user is a cold-start user: no target training data
        test_users = dm.index.users_with("B", "test")
        assert not np.isin(test_users, dm.index.users_with("B", "train")).any()
        assert not model.has_target[torch.from_numpy(test_users)].any()
    print("cold-start NDCG@10", ndcg)
    assert ndcg["TargetOnlyMF"] > 0.1  # learned (random ranking scores about 0.04 here)
    assert ndcg["SharedUserMF"] > ndcg["TargetOnlyMF"] + 0.05


def test_target_only_cold_user_gets_mean_of_warm_vectors(tiny_source):
    dm = cross("target", "cold_start")(tiny_source)
    model = TargetOnlyMF(**dm.model_arguments_for(TargetOnlyMF), embedding_dim=8, lr=0.01)
    quiet_trainer(max_epochs=1, limit_val_batches=0).fit(model, dm)
    warm = dm.index.users_with("B", "train")
    assert model.has_target.sum() == len(warm) < dm.num_users
    assert model.has_target[torch.from_numpy(warm)].all()
    cold = torch.nonzero(~model.has_target).reshape(-1)
    model.eval()
    with torch.no_grad():
        mean = model.user_emb.weight[torch.from_numpy(warm)].mean(0)
        users = torch.cat([cold[:3], torch.from_numpy(warm[:2])])
        vectors = model.user_vectors(users)
        torch.testing.assert_close(vectors[:3], mean.expand(3, -1), rtol=0, atol=1e-7)
        torch.testing.assert_close(vectors[3:], model.user_emb.weight[torch.from_numpy(warm[:2])], rtol=0, atol=0)
        # and the ranking follows: the cold users' scores are the mean vector's scores
        torch.testing.assert_close(model.full_scores(cold[:3]), (mean @ model.item_emb.weight.T).expand(3, -1), rtol=1e-6, atol=1e-6)


def test_target_only_on_a_single_store_datamodule_has_all_users_warm(tiny_source):
    dm = InteractionDataModule(tiny_source, "B", batch_size=256, seed=0)
    model = TargetOnlyMF(**dm.model_arguments_for(TargetOnlyMF), embedding_dim=8)
    quiet_trainer(max_epochs=1, limit_val_batches=0).fit(model, dm)
    assert model.has_target.all()


# ---------------------------------------------------------------------------------------------
# hand-made tables: exact counts and scores
# ---------------------------------------------------------------------------------------------
#  source store S (all train)          target store T
#  u1: s1 s2                           u1: t1 t2 (train)
#  u2: s1                              u2: t1 t3 (train)
#  u3: s2 s3                           u3: t2 (train)
#  u4: s1 s3                           u4: t2 (test: a cold-start user)
#  u5: -                               u5: t1 t4 (train), t3 (valid): not a shared user
# shared users (training data in both stores): u1, u2, u3
HAND = [
    ("u1", "s1", "S", "train"), ("u1", "s2", "S", "train"), ("u2", "s1", "S", "train"),
    ("u3", "s2", "S", "train"), ("u3", "s3", "S", "train"), ("u4", "s1", "S", "train"), ("u4", "s3", "S", "train"),
    ("u1", "t1", "T", "train"), ("u1", "t2", "T", "train"), ("u2", "t1", "T", "train"), ("u2", "t3", "T", "train"),
    ("u3", "t2", "T", "train"), ("u4", "t2", "T", "test"),
    ("u5", "t1", "T", "train"), ("u5", "t4", "T", "train"), ("u5", "t3", "T", "valid"),
]  # fmt: skip


@pytest.fixture
def hand_dm(tmp_path):
    frame = pd.DataFrame(HAND, columns=["user", "item", "domain", "split"])
    frame["position"] = frame.groupby(["user", "domain"]).cumcount()
    frame["rating"] = np.arange(len(frame)) % 5 + 1.0
    table = InteractionTable(frame)
    path = tmp_path / "hand_split.csv"
    save_split(table, path)

    def make(**kwargs):
        return CrossDomainDataModule(TableSource(table), "S", "T", split="file", split_file=str(path), batch_size=4, num_negatives=1, **kwargs)

    return make


def fit_counting(model, dm):
    quiet_trainer(max_epochs=1, limit_val_batches=0).fit(model, dm)
    model.eval()
    return model


def users(dm, *ids):
    return torch.from_numpy(dm.user_vocab.encode(list(ids)))


def test_overlap_popularity_counts_only_shared_users(hand_dm):
    dm = hand_dm()
    model = fit_counting(OverlapPopularity(**dm.model_arguments_for(OverlapPopularity), ks=(1, 2)), dm)
    order = dm.target_item_vocab.encode(["t1", "t2", "t3", "t4"])
    # u5's t1/t4 (no source data) and u4's t2 (test) are not counted; global popularity would give 3, 2, 1, 1
    assert model.counts[order].tolist() == [2.0, 2.0, 1.0, 0.0]
    assert int(model.n_shared) == 3
    assert model.full_scores(users(dm, "u4", "u5")).tolist() == [[2.0, 2.0, 1.0, 0.0]] * 2


@pytest.mark.parametrize("weight", [0.25, 1e-6])
def test_cooccurrence_exact_scores(hand_dm, weight):
    dm = hand_dm()
    model = fit_counting(CrossDomainCooccurrence(**dm.model_arguments_for(CrossDomainCooccurrence), popularity_weight=weight, ks=(1, 2)), dm)
    col = dm.target_item_vocab.encode(["t1", "t2", "t3", "t4"])
    pop = np.array([2, 2, 1, 0]) / 3  # shared users owning each target item / 3 shared users
    # P[i, j] = C[i, j] / n_i over shared users: s1 (u1, u2) -> t1 1, t2 1/2, t3 1/2;
    # s2 (u1, u3) -> t1 1/2, t2 1; s3 (u3) -> t2 1
    expected = {
        "u4": np.array([1.0, 0.5 + 1.0, 0.5, 0.0]) + weight * pop,  # s1 + s3
        "u1": np.array([1.0 + 0.5, 0.5 + 1.0, 0.5, 0.0]) + weight * pop,  # s1 + s2
        "u5": pop,  # no source items: overlap popularity
    }
    got = model.full_scores(users(dm, *expected)).numpy()[:, col]
    np.testing.assert_allclose(got, np.stack(list(expected.values())), rtol=0, atol=1e-12)
    # pairwise scores agree with the full ranking
    u4, t2 = users(dm, "u4"), torch.from_numpy(dm.target_item_vocab.encode(["t2"]))
    assert float(model.score(u4, t2)) == pytest.approx(1.5 + weight * 2 / 3, abs=1e-12)
    # the cold user u4's test item t2 is ranked first
    top, _ = model.recommend(u4, k=1)
    assert dm.target_item_vocab.decode(top.reshape(-1)).tolist() == ["t2"]


def test_cooccurrence_chunked_scores_equal_one_pass(tiny_source):
    dm = cross("source", "cold_start")(tiny_source)
    model = fit_counting(CrossDomainCooccurrence(**dm.model_arguments_for(CrossDomainCooccurrence)), dm)
    all_users = torch.arange(dm.num_users)
    whole = model.full_scores(all_users)
    model.CHUNK_ENTRIES = 50  # many chunks
    torch.testing.assert_close(model.full_scores(all_users), whole, rtol=0, atol=1e-12)
    # nothing dense of size source x target is stored
    assert model.cooc_values.numel() < dm.num_source_items * dm.num_items


def test_cmf_rating_task_uses_squared_error_on_ratings(hand_dm):
    dm = hand_dm(keep_ratings=True)
    pl.seed_everything(0, verbose=False)
    model = CMF(**dm.model_arguments_for(CMF), embedding_dim=4, alpha=0.5, ks=(1, 2))
    trainer = quiet_trainer(max_epochs=1, limit_val_batches=0)
    trainer.fit(model, dm)
    frame = dm.table.frame
    train_t = frame[(frame["domain"] == "T") & (frame["split"] == "train")]
    assert float(model.target_rating_mean) == pytest.approx(train_t["rating"].mean())
    batch = {"users": users(dm, "u1", "u2"), "items": torch.tensor([0, 1]), "ratings": torch.tensor([5.0, 1.0]), "negatives": torch.tensor([[2], [3]])}
    pred = model.score(batch["users"], batch["items"])
    torch.testing.assert_close(model.target_loss(batch), torch.nn.functional.mse_loss(pred, batch["ratings"]))
    out = trainer.test(model, dm, verbose=False)[0]
    assert "test/mae" in out and "test/rmse" in out


# ---------------------------------------------------------------------------------------------
# bad arguments: CrossRecError naming the problem and the fix
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: CMF(10, 30, 5, alpha=1.5), "alpha"),
        (lambda: CMF(10, 30, 5, source_weight=0.5), "alpha"),
        (lambda: CMF(10, 30, 5, implicit_loss="hinge"), "implicit_loss"),
        (lambda: CMF(10, 30, 5, l2_reg=-1), "l2_reg"),
        (lambda: CMF(10, 30, 5, embedding_dim=0), "embedding_dim"),
        (lambda: SharedUserMF(10, 30, 5, l2_reg=-1), "l2_reg"),
        (lambda: SharedUserMF(10, 30, 5, embedding_dim=0), "embedding_dim"),
        (lambda: SharedUserMF(10, 30, 0), "num_source_items"),
        (lambda: SharedUserMF(10, 30, 5, source_weight=-1), "source_weight"),
        (lambda: TargetOnlyMF(10, 30, l2_reg=-1), "l2_reg"),
        (lambda: CrossDomainCooccurrence(10, 30, 0), "num_source_items"),
        (lambda: CrossDomainCooccurrence(10, 30, 5, popularity_weight=-1.0), "popularity_weight"),
    ],
)
def test_bad_arguments(make, match):
    with pytest.raises(CrossRecError, match=match):
        make()


def test_cmf_refuses_alpha_scheduled_out_of_range():
    model = CMF(10, 30, 5)
    with pytest.raises(CrossRecError, match="alpha"):
        model.alpha = 2.0
    model.source_weight = 1.5  # e.g. by SourceWeightSchedule
    batch = {"users": torch.tensor([0]), "items": torch.tensor([1]), "negatives": torch.tensor([[2]])}
    with pytest.raises(CrossRecError, match="alpha"):
        model.joint_loss({"target": batch})


@pytest.mark.parametrize("cls", [OverlapPopularity, CrossDomainCooccurrence])
def test_counting_models_need_a_cross_domain_datamodule(cls, tiny_source):
    dm = InteractionDataModule(tiny_source, "B", batch_size=256)
    model = cls(num_users=dm.num_users, num_items=dm.num_items, **({"num_source_items": 5} if cls is CrossDomainCooccurrence else {}))
    with pytest.raises(CrossRecError, match="CrossDomainDataModule"):
        quiet_trainer(max_epochs=1).fit(model, dm)


def test_target_only_refuses_source_batches(tiny_source):
    dm = cross("both")(tiny_source)
    model = TargetOnlyMF(**dm.model_arguments_for(TargetOnlyMF), embedding_dim=8)
    with pytest.raises(CrossRecError, match="single-domain model"):
        quiet_trainer(max_epochs=1).fit(model, dm)
