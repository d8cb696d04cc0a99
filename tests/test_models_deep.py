"""CoNet and DTCDR: the shared contract, what defines each model (CoNet's cross connections and
chunked ranking, DTCDR's user combinations and cold fallback), and a cold-start sanity run."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from contract import ALL_CHECKS, Case, check_contract
from conftest import quiet_trainer
from crossrec_lit import CrossRecError
from crossrec_lit.data import CrossDomainDataModule, Synthetic
from crossrec_lit.evaluation.protocol import evaluate
from crossrec_lit.models import BPRMF
from crossrec_lit.models.conet import CoNet
from crossrec_lit.models.dtcdr import DTCDR


def both(split: str = "leave_one_out"):
    def make(source):
        return CrossDomainDataModule(source, "A", "B", split=split, phase="both", batch_size=256, num_negatives=2, seed=0)

    return make


def build(cls, **kwargs):
    return lambda dm: cls(**dm.model_arguments_for(cls), **kwargs)


SMALL_CONET = dict(embedding_dim=8, hidden=[16, 8], lr=0.01)
CONTRACT = {
    "CoNet": Case(build(CoNet, **SMALL_CONET), both(), epochs=1),
    "DTCDR": Case(build(DTCDR, embedding_dim=16, lr=0.01), both()),
}
# the other settings, trained once or twice each: case and the contract checks it goes through
VARIANTS = {
    "CoNet-history": (Case(build(CoNet, **SMALL_CONET, other_item="history"), both(), epochs=1), ("shapes", "checkpoint")),
    "CoNet-l1-3layers-cold": (Case(build(CoNet, embedding_dim=8, hidden=[16, 8, 8], lr=0.01, cross_l1=1e-4), both("cold_start"), epochs=1), ("shapes",)),
    "DTCDR-max": (Case(build(DTCDR, embedding_dim=16, lr=0.01, combine="max"), both(), epochs=1), ("shapes",)),
    "DTCDR-concat_mlp-bce": (Case(build(DTCDR, embedding_dim=16, lr=0.01, combine="concat_mlp", loss_type="bce"), both(), epochs=1), ("shapes", "checkpoint")),
    "DTCDR-mean-cold": (Case(build(DTCDR, embedding_dim=16, lr=0.01), both("cold_start"), epochs=1), ("shapes",)),
}
VARIANT_CHECKS = [(name, check) for name, (_, checks) in sorted(VARIANTS.items()) for check in checks]


@pytest.mark.parametrize("check", sorted(ALL_CHECKS))
@pytest.mark.parametrize("model", sorted(CONTRACT))
def test_contract(model, check, tiny_source, tmp_path):
    check_contract(check, CONTRACT[model], tiny_source, tmp_path)


@pytest.mark.parametrize("variant, check", VARIANT_CHECKS)
def test_variant_contract(variant, check, tiny_source, tmp_path):
    check_contract(check, VARIANTS[variant][0], tiny_source, tmp_path)


@pytest.mark.parametrize(
    "cls, kwargs, match",
    [
        (CoNet, {"hidden": []}, "hidden"),
        (CoNet, {"other_item": "mean"}, "other_item"),
        (CoNet, {"cross_l1": -1.0}, "cross_l1"),
        (CoNet, {"score_chunk": 0}, "score_chunk"),
        (DTCDR, {"combine": "sum"}, "combine"),
        (DTCDR, {"loss_type": "hinge"}, "loss_type"),
    ],
)
def test_bad_arguments_are_refused(cls, kwargs, match):
    with pytest.raises(CrossRecError, match=match):
        cls(10, 50, 50, **kwargs)


@pytest.fixture(scope="module")
def cold_dm(tiny_source):
    dm = CrossDomainDataModule(tiny_source, "A", "B", split="cold_start", phase="both", batch_size=256, num_negatives=2, seed=0)
    dm.setup()
    return dm


def bound(cls, dm, seed=0, **kwargs):
    torch.manual_seed(seed)
    model = cls(**dm.model_arguments_for(cls), **kwargs)
    model.bind_data(dm)
    return model


def a_batch(dm, part: str) -> dict:
    batch, _, _ = next(iter(dm.train_dataloader()))  # a CombinedLoader yields (batch, index, loader index)
    return batch[part]


# ---------------------------------------------------------------------------------------------
# CoNet
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("other_item", ["zero", "history"])
def test_conet_chunked_full_scores_equal_unchunked_exactly(cold_dm, other_item):
    model = bound(CoNet, cold_dm, **SMALL_CONET, other_item=other_item, score_chunk=10**12).eval()
    users = torch.arange(9)
    with torch.no_grad():
        whole = model.full_scores(users)
        for chunk in (1, 50, 1000, 7777):  # 1 pair per block, a few items per block, odd blocks
            model.score_chunk = chunk
            assert torch.equal(model.full_scores(users), whole), chunk
        pairs = model.score(users[:, None], torch.arange(model.num_items)[None, :])
    torch.testing.assert_close(pairs, whole, rtol=1e-6, atol=1e-6)


def test_conet_score_chunk_bounds_the_blocks(cold_dm, monkeypatch):
    model = bound(CoNet, cold_dm, **SMALL_CONET, score_chunk=2000).eval()
    per_pair = 2 * sum(model.hidden)
    blocks = []
    deep = model._deep
    monkeypatch.setattr(model, "_deep", lambda store, a, b: (blocks.append(a.shape[0] * a.shape[1]), deep(store, a, b))[1])
    with torch.no_grad():
        model.full_scores(torch.arange(20))
    assert sum(blocks) == 20 * model.num_items
    assert max(blocks) * per_pair <= 2000


def _grads(loss, params: dict) -> dict:
    grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    return {name: (torch.zeros_like(p) if g is None else g) for (name, p), g in zip(params.items(), grads)}


@pytest.mark.parametrize("other_item", ["zero", "history"])
@pytest.mark.parametrize("zero_cross", [True, False])
def test_conet_cross_connections_are_the_only_path_between_towers(cold_dm, zero_cross, other_item):
    model = bound(CoNet, cold_dm, **SMALL_CONET, other_item=other_item)
    if zero_cross:
        with torch.no_grad():
            for h in model.cross:
                h.weight.zero_()
    for store, other in (("source", "target"), ("target", "source")):
        params = {n: p for n, p in model.named_parameters() if n.startswith((f"layers.{other}.", f"out.{other}.", f"item_emb.{other}."))}
        params["user_emb.weight"] = model.user_emb.weight
        loss = getattr(model, f"{store}_loss")(a_batch(cold_dm, store))
        grads = _grads(loss, params)
        # the user embedding is shared by the towers: always a path
        assert grads.pop("user_emb.weight").abs().sum() > 0
        reached = {n: bool(g.abs().sum() > 0) for n, g in grads.items()}
        if zero_cross:
            assert not any(reached.values()), (store, reached)
        else:
            # through H: the other tower's hidden layers, never its output layer, and its items
            # only when it is fed the user's history there
            assert reached[f"layers.{other}.0.weight"] and not reached[f"out.{other}.weight"], (store, reached)
            assert reached[f"item_emb.{other}.weight"] == (other_item == "history"), (store, reached)


def test_conet_history_reads_the_source_store_only_through_h(cold_dm):
    model = bound(CoNet, cold_dm, **SMALL_CONET, other_item="history").eval()
    users = torch.arange(10)

    def scores_after_moving_source_items():
        with torch.no_grad():
            before = model.full_scores(users)
            saved = model.item_emb["source"].weight.clone()
            model.item_emb["source"].weight.add_(1.0)
            after = model.full_scores(users)
            model.item_emb["source"].weight.copy_(saved)
        return before, after

    before, after = scores_after_moving_source_items()
    assert not torch.equal(before, after)  # the user's source history reaches the target tower
    with torch.no_grad():
        for h in model.cross:
            h.weight.zero_()
    before, after = scores_after_moving_source_items()
    assert torch.equal(before, after)


def test_conet_cross_l1_is_added_once_to_the_joint_loss(cold_dm):
    batch = {p: a_batch(cold_dm, p) for p in ("source", "target")}
    plain = bound(CoNet, cold_dm, seed=4, **SMALL_CONET, source_weight=0.5)
    sparse = bound(CoNet, cold_dm, seed=4, **SMALL_CONET, source_weight=0.5, cross_l1=1e-3)
    total_plain, parts = plain.joint_loss(batch)
    total_sparse, _ = sparse.joint_loss(batch)
    l1 = sum(h.weight.abs().sum() for h in sparse.cross)
    torch.testing.assert_close(total_plain, 0.5 * parts["source"] + parts["target"])
    torch.testing.assert_close(total_sparse, total_plain + 1e-3 * l1)


# ---------------------------------------------------------------------------------------------
# DTCDR
# ---------------------------------------------------------------------------------------------
def _users_by_presence(model):
    both_ = (model.has_source & model.has_target).nonzero().flatten()[:6]
    cold = (model.has_source & ~model.has_target).nonzero().flatten()[:6]
    source_less = (~model.has_source & model.has_target).nonzero().flatten()[:6]
    assert len(both_) and len(cold) and len(source_less)
    return both_, cold, source_less


@pytest.mark.parametrize("combine", ["mean", "max", "concat_mlp"])
def test_dtcdr_combinations_and_cold_fallback(cold_dm, combine):
    model = bound(DTCDR, cold_dm, embedding_dim=8, combine=combine)
    warm, cold, source_less = _users_by_presence(model)
    with torch.no_grad():
        for users, (p_s, p_t) in (
            (warm, (model.user_emb["source"](warm), model.user_emb["target"](warm))),
            # the documented fallback: a store the user lacks contributes the other store's vector
            (cold, (model.user_emb["source"](cold),) * 2),
            (source_less, (model.user_emb["target"](source_less),) * 2),
        ):
            for store in ("source", "target"):
                expected = {
                    "mean": lambda: (p_s + p_t) / 2,
                    "max": lambda: torch.maximum(p_s, p_t),
                    "concat_mlp": lambda: model.combiner[store](torch.cat([p_s, p_t], -1)),
                }[combine]()
                torch.testing.assert_close(model.user_vectors(users, store), expected, rtol=0, atol=0)
        if combine in ("mean", "max"):  # exactly the present store's vector
            torch.testing.assert_close(model.user_vectors(cold, "target"), model.user_emb["source"](cold), rtol=0, atol=0)
            torch.testing.assert_close(model.user_vectors(source_less, "source"), model.user_emb["target"](source_less), rtol=0, atol=0)
        else:  # one MLP per store: the stores read different views
            assert not torch.equal(model.user_vectors(warm, "source"), model.user_vectors(warm, "target"))


def test_dtcdr_is_dual_target_and_never_trains_a_missing_vector(cold_dm):
    model = bound(DTCDR, cold_dm, embedding_dim=8, combine="concat_mlp")
    for store in ("source", "target"):
        batch = a_batch(cold_dm, store)
        loss = getattr(model, f"{store}_loss")(batch)
        g_s, g_t = torch.autograd.grad(loss, [model.user_emb["source"].weight, model.user_emb["target"].weight])
        users = batch["users"].unique()
        warm = users[model.has_source[users] & model.has_target[users]]
        # either store's loss trains BOTH vectors of a user present in both stores
        assert g_s[warm].abs().sum(1).gt(0).all() and g_t[warm].abs().sum(1).gt(0).all()
        # ... and never the vector of a store the user is missing from
        assert g_t[~model.has_target].abs().sum() == 0 and g_s[~model.has_source].abs().sum() == 0


def test_dtcdr_cold_users_are_ranked_with_their_source_vector(cold_dm):
    torch.manual_seed(0)
    model = DTCDR(**cold_dm.model_arguments_for(DTCDR), embedding_dim=8, lr=0.01)
    quiet_trainer(max_epochs=1, limit_val_batches=0).fit(model, cold_dm)
    cold = torch.from_numpy(cold_dm.index.users_with("B", "test"))
    assert not model.has_target[cold].any()  # bound by fit
    with torch.no_grad():
        expected = model.user_emb["source"](cold) @ model.item_emb["target"].weight.T
        torch.testing.assert_close(model.full_scores(cold), expected)


# ---------------------------------------------------------------------------------------------
# cold start: the models transfer what the source store knows about a target-cold user
# ---------------------------------------------------------------------------------------------
class FixedRanking:
    """The same scores for every user (random, popularity, an average-user vector)."""

    def __init__(self, scores: torch.Tensor):
        self.scores = scores

    def full_scores(self, users):
        return self.scores.unsqueeze(0).expand(len(users), -1)


def ndcg10(model, dm) -> float:
    return evaluate(model, dm.test_dataloader(), ks=(10,))[0]["ndcg@10"]


COLD_SEED = 0
# Measured with exactly these settings on seeds 0, 1, 2 (NDCG@10 on the ~240 cold-start users):
#   random 0.06/0.04/0.02; average target user (BPR-MF, target store only) 0.165/0.196/0.182;
#   DTCDR 0.332/0.344/0.326 (1.8-2.0x the average user); CoNet 0.240/0.219/0.225 (1.12-1.46x).
# CoNet's MLP towers learn the user-item interaction more slowly than a dot product (with half
# the epochs or a quarter of the width it was only level with the average user), hence its
# larger model and the looser bound below.


def test_cold_start_transfer_beats_random_and_the_average_target_user():
    source = Synthetic(n_users=1500, n_items=(300, 250), overlap=0.8, domain_shift=0.0, interactions_per_user=(15, 10), seed=COLD_SEED)

    def data(phase, batch_size=512):
        return CrossDomainDataModule(
            source, "A", "B", split="cold_start", cold_start_share=0.2, phase=phase, batch_size=batch_size, num_negatives=4, seed=COLD_SEED
        )

    def fit(model, dm, epochs):
        quiet_trainer(max_epochs=epochs, limit_val_batches=0).fit(model, dm)
        return model

    dm = data("both")
    dm.setup()
    assert len(dm.index.users_with("B", "test")) > 200
    assert not (dm.index.matrix("B", "train").getnnz(1)[dm.index.users_with("B", "test")]).any()  # truly cold
    g = torch.Generator().manual_seed(COLD_SEED)
    random = ndcg10(FixedRanking(torch.rand(dm.num_items, generator=g)), dm)

    # the target-only reference: BPR-MF on the target store; a cold user gets the warm users' mean
    target_dm = data("target")
    pl.seed_everything(COLD_SEED, verbose=False)
    mf = fit(BPRMF(target_dm.num_users, target_dm.num_items, embedding_dim=16, lr=0.01), target_dm, 5)
    warm = torch.from_numpy(target_dm.index.users_with("B", "train"))
    with torch.no_grad():
        average_user = ndcg10(FixedRanking(mf.user_emb.weight[warm].mean(0) @ mf.item_emb.weight.T), target_dm)

    pl.seed_everything(COLD_SEED, verbose=False)
    dtcdr = ndcg10(fit(DTCDR(**dm.model_arguments_for(DTCDR), embedding_dim=16, lr=0.01), dm, 5), dm)
    pl.seed_everything(COLD_SEED, verbose=False)
    conet_dm = data("both", batch_size=1024)
    conet = ndcg10(fit(CoNet(**conet_dm.model_arguments_for(CoNet), embedding_dim=32, hidden=[64, 32], lr=0.01), conet_dm, 10), conet_dm)
    print(f"cold-start NDCG@10: random {random:.3f}  average target user {average_user:.3f}  DTCDR {dtcdr:.3f}  CoNet {conet:.3f}")

    assert random < 0.1
    assert dtcdr > 3 * random and conet > 3 * random
    assert dtcdr > 1.5 * average_user
    assert conet > 1.05 * average_user
