"""Purchase sequences (crossrec_lit.data.sequences) and the SASRec model that reads them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import quiet_trainer
from crossrec_lit import CrossRecError
from crossrec_lit.data import CrossDomainDataModule, InteractionDataModule
from crossrec_lit.data.sequences import PAD, SequenceBatches, padded_sequences
from crossrec_lit.models import BPRMF, SASRec


def test_padded_sequences_are_ordered_right_aligned_and_keep_the_most_recent():
    users = np.array([0, 0, 0, 1, 0, 1])
    items = np.array([5, 6, 7, 2, 8, 3])
    positions = np.array([2, 0, 1, 1, 3, 0])  # user 0 bought 6, 7, 5, 8 in that order
    out = padded_sequences(users, items, positions, num_users=3, length=3)
    assert out.tolist() == [[7 + 1, 5 + 1, 8 + 1], [PAD, 3 + 1, 2 + 1], [PAD, PAD, PAD]]


def test_sequence_batches_serve_every_customer_once_with_shifted_targets():
    seqs = padded_sequences(np.repeat(np.arange(50), 4) % 50, np.arange(200) % 17, np.arange(200), 50, 6)
    seqs[7] = PAD  # a customer with no history is not served
    seqs[8, :-1] = PAD  # nor one with a single item: nothing follows it
    data = SequenceBatches(seqs, batch_size=8, seed=3)
    data.set_epoch(0)
    batches = list(data)
    served = torch.cat([b["users"] for b in batches])
    assert sorted(served.tolist()) == sorted(set(range(50)) - {7, 8})
    for b in batches:
        rows = torch.as_tensor(seqs)[b["users"]]
        width = b["inputs"].shape[1]
        # cut to the longest history in the batch; targets are the inputs moved one step on
        assert torch.equal(b["inputs"], rows[:, -width - 1 : -1]) and torch.equal(b["targets"], rows[:, -width:])
    data.set_epoch(1)
    assert [b["users"].tolist() for b in data] != [b["users"].tolist() for b in batches]
    data.set_epoch(0)
    assert [b["users"].tolist() for b in data] == [b["users"].tolist() for b in batches]


def test_bucketing_cuts_batches_to_their_longest_history():
    lengths = np.r_[np.full(40, 2), np.full(8, 30)]
    users = np.repeat(np.arange(48), lengths)
    seqs = padded_sequences(users, np.arange(len(users)) % 11, np.arange(len(users)), 48, 31)
    widths = sorted(b["inputs"].shape[1] for b in SequenceBatches(seqs, batch_size=8, seed=0))
    assert widths == [1] * 5 + [29]  # short customers batch together; 30 items give 29 input-target pairs
    assert all(b["inputs"].shape[1] == 30 for b in SequenceBatches(seqs, batch_size=8, bucket=False))


def small_model(dm, **kwargs):
    return SASRec(**dm.model_arguments_for(SASRec), max_len=8, embedding_dim=16, ffn_dim=32, lr=0.01, **kwargs)


def test_sasrec_is_causal_and_ignores_padding(tiny_source):
    dm = InteractionDataModule(tiny_source, "B", batch_size=64, sequence_len=8, seed=0)
    model = small_model(dm).eval()
    seq = torch.tensor([[PAD, PAD, PAD, 4, 9, 2, 7, 3]])
    later_changed = seq.clone()
    later_changed[0, -1] = 11
    with torch.no_grad():
        a, b = model.encode(seq), model.encode(later_changed)
        # the state at every position but the last sees only what came before it
        torch.testing.assert_close(a[:, :-1][:, 3:], b[:, :-1][:, 3:])
        # the same history with less padding in front gives the same customer state
        torch.testing.assert_close(model.encode(seq[:, 3:])[:, -1], a[:, -1], rtol=1e-5, atol=1e-6)


def test_sasrec_reads_the_validation_item_only_at_test(tiny_source):
    dm = InteractionDataModule(tiny_source, "B", batch_size=64, sequence_len=8, seed=0)
    model = small_model(dm)
    quiet_trainer(max_epochs=1, limit_val_batches=0).fit(model, dm)
    valid, test = model.valid_history, model.test_history
    a = dm.index.arrays("B", "valid")
    # at test, the validation item is the most recent one; before it, the validation history
    assert torch.equal(test[a["users"], -1], torch.from_numpy(a["items"] + 1))
    assert torch.equal(test[a["users"], :-1], valid[a["users"], 1:])


def test_sasrec_learns_the_next_item_on_a_deterministic_store():
    """Every customer walks the same cycle of 30 items, starting somewhere: the next item is a
    function of the last one, which no order-blind model can know and SASRec must learn."""
    import pandas as pd

    from crossrec_lit.data import InteractionTable, TableSource

    rows = [(f"u{u}", f"i{(u + t) % 30}", t) for u in range(300) for t in range(7)]
    table = InteractionTable.from_frame(pd.DataFrame(rows, columns=["user", "item", "position"]), domain="S")
    dm = InteractionDataModule(TableSource(table), "S", batch_size=64, sequence_len=8, seed=0)
    torch.manual_seed(0)
    model = SASRec(**dm.model_arguments_for(SASRec), max_len=8, embedding_dim=16, ffn_dim=32, dropout=0.0, lr=0.01, ks=(1, 10))
    trainer = quiet_trainer(max_epochs=30, limit_val_batches=0)
    trainer.fit(model, dm)
    assert trainer.test(model, dm, verbose=False)[0]["test/hit@1"] > 0.9  # chance: 1 in 24 unseen items


def test_sasrec_needs_sequences(tiny_source):
    dm = InteractionDataModule(tiny_source, "B", batch_size=64, seed=0)
    with pytest.raises(CrossRecError, match="sequence_len=8"):
        quiet_trainer(max_epochs=1).fit(small_model(dm), dm)
    with pytest.raises(CrossRecError, match="sequence_stores must be"):
        CrossDomainDataModule(tiny_source, "A", "B", sequence_len=8, sequence_stores="both")
    with pytest.raises(CrossRecError, match="eval_domain='source' does not apply"):
        CrossDomainDataModule(tiny_source, "A", "B", sequence_len=8, eval_domain="source")
    with pytest.raises(CrossRecError, match="unknown positions"):
        SASRec(10, 100, positions="relative")
    with pytest.raises(CrossRecError, match="smaller than the 100 items"):
        SASRec(10, 100, num_input_items=50)
    with pytest.raises(CrossRecError, match="sequence_len must be"):
        InteractionDataModule(tiny_source, "B", sequence_len=0)
    with pytest.raises(CrossRecError, match="unknown loss"):
        SASRec(10, 100, loss="hinge")
    with pytest.raises(CrossRecError, match="divisible"):
        SASRec(10, 100, embedding_dim=10, num_heads=3)


def test_bprmf_still_trains_on_interactions_next_to_sasrec(tiny_source):
    """sequence_len only changes what the training loader serves."""
    dm = InteractionDataModule(tiny_source, "B", batch_size=64, seed=0)
    batch = next(iter(dm.train_dataloader()))
    assert {"users", "items", "negatives"} <= batch.keys()
    quiet_trainer(max_epochs=1, limit_val_batches=0).fit(BPRMF(dm.num_users, dm.num_items, embedding_dim=8), dm)


@pytest.mark.parametrize(
    "name, models",
    [
        ("toys_sequential", {"Popularity", "BPR-MF", "SASRec"}),
        ("sequential_transfer", {"Popularity", "BPR-MF", "SASRec", "SASRec, Beauty-pretrained"}),
        ("sasrec_losses", {"SASRec, sampled softmax", "SASRec, full softmax", "SASRec, binary loss"}),
        (
            "text_sequential",
            {"Popularity (P1)", "SASRec (P1)", "Random (P3)", "Text two-tower (P3)", "Text + ID two-tower (P3)"}
            | {f"{m} ({p})" for m in ("Text SASRec, Toys alone", "Text SASRec, zero-shot", "Text SASRec, fine-tuned", "Text + ID SASRec, fine-tuned") for p in ("P1", "P3")},
        ),
    ],
)
def test_sequential_configs_run_in_smoke_mode(tmp_path, name, models):
    """SASRec gets its sequence batches from its own data: section while BPR-MF, in the same run,
    trains on interactions; the Beauty-pretrained SASRec loads the blocks of a SASRec trained on
    Beauty (LoadSourceWeights refuses to start when a mapped tensor does not fit)."""
    from pathlib import Path

    from crossrec_lit.experiment import run_experiment

    config = Path(__file__).resolve().parents[1] / "configs" / f"{name}.yaml"
    results = run_experiment(config, 1, tmp_path, smoke=True, progress=False)
    tested = results[(results["split"] == "test") & (results["metric"] == "ndcg")]
    assert set(tested["model"]) == models
    assert tested["value"].between(0, 1).all()


def test_sasrec_attention_looks_only_backwards_and_sums_to_one(tiny_source):
    dm = InteractionDataModule(tiny_source, "B", batch_size=64, sequence_len=8, seed=0)
    model = small_model(dm)
    seq = torch.tensor([4, 9, 2, 7, 3])
    weights = model.attention(seq)
    assert weights.shape == (2, 5, 5)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 5))
    assert torch.all(torch.triu(weights, 1) == 0)  # no position draws on a later purchase
    # the block-by-block walk that collects the weights is the encoder's own forward pass
    model.eval()
    with torch.no_grad():
        x, mask = model._inputs(seq[None])
        for layer in model.blocks.layers:
            x = layer(x, src_mask=mask)
        torch.testing.assert_close(x, model.encode(seq[None]), rtol=1e-5, atol=1e-6)


def test_merged_sequences_put_the_source_history_first_in_one_vocabulary(tiny_source):
    dm = CrossDomainDataModule(tiny_source, "A", "B", sequence_len=40, seed=0)
    idx, ns = dm.index, dm.num_source_items
    assert dm.model_arguments_for(SASRec)["num_input_items"] == ns + dm.num_target_items
    merged = dm.sequences("train")
    src, tgt = dm.sequences("train", domain="A"), dm.sequences("train", domain="B")
    shared = np.intersect1d(idx.users_with("A", "train"), idx.users_with("B", "train"))
    assert len(shared) > 10
    for u in shared[:10]:
        s_items = src[u][src[u] != PAD].tolist()
        t_items = (tgt[u][tgt[u] != PAD] + ns).tolist()
        assert merged[u][merged[u] != PAD].tolist() == (s_items + t_items)[-40:]
    with_valid = dm.sequences(("train", "valid"))
    valid = idx.arrays("B", "valid")
    assert (with_valid[valid["users"], -1] == valid["items"] + ns + 1).all()  # the valid item comes last
    alone = CrossDomainDataModule(tiny_source, "A", "B", sequence_len=40, seed=0, sequence_stores="target")
    assert np.array_equal(alone.sequences("train"), tgt) and alone.num_input_items == alone.num_target_items
    # zero-shot: train on the source store's sequences, score customers from their target histories
    zero = CrossDomainDataModule(tiny_source, "A", "B", sequence_len=40, seed=0, sequence_stores="source")
    assert zero.num_input_items == ns + zero.num_target_items
    assert np.array_equal(zero.training_sequences(40), src)
    assert np.array_equal(zero.sequences("train"), np.where(tgt > PAD, tgt + ns, PAD))
    trained = torch.cat([b["users"] for b in zero.train_dataloader()])
    assert set(trained.tolist()) == set(np.flatnonzero((src != PAD).sum(1) >= 2).tolist())


def test_merged_sasrec_ranks_target_items_for_cold_start_customers():
    """Each customer buys one source item and then its partner in the target store: the partner is
    a function of the source item, which only a model reading both stores in one sequence can
    learn. Cold-start customers (no target history) must be told their partner item. Positions
    count from the start of the history, so the last source item has the same position for a cold
    customer as for the warm customers the model learned from."""
    import pandas as pd

    from crossrec_lit.data import InteractionTable, TableSource

    rows = []
    for u in range(400):
        s = u % 20
        rows += [(f"u{u}", f"s{s}", 0, "S"), (f"u{u}", f"s{(s + 7) % 20}", 1, "S"), (f"u{u}", f"t{(s + 7) % 20}", 0, "T"), (f"u{u}", f"t{(s + 3) % 20}", 1, "T")]
    frame = pd.DataFrame(rows, columns=["user", "item", "position", "domain"])
    table = InteractionTable(frame)
    torch.manual_seed(0)
    results = {}
    for stores in ("merged", "target"):
        dm = CrossDomainDataModule(TableSource(table), "S", "T", split="cold_start", cold_start_share=0.2, cold_valid_share=0.1, sequence_len=4, sequence_stores=stores, batch_size=64, seed=0)
        model = SASRec(**dm.model_arguments_for(SASRec), max_len=4, embedding_dim=16, ffn_dim=32, dropout=0.0, lr=0.01, ks=(1, 10), positions="from_start")
        assert model.num_input_items == (40 if stores == "merged" else 20) and model.num_items == 20
        trainer = quiet_trainer(max_epochs=40, limit_val_batches=0)
        trainer.fit(model, dm)
        results[stores] = trainer.test(model, dm, verbose=False)[0]["test/hit@1"]
        assert model.full_scores(torch.arange(3)).shape == (3, 20)
    assert results["merged"] > 0.9  # the first target item follows from the last source item
    assert results["target"] < 0.3  # no target history: one state for every cold customer


def test_positions_from_start_count_each_customers_history_from_its_first_item(tiny_source):
    """From the start, a purchase's state depends on what came before it, not on how much came
    after: the first item of [4, 9, 2] reads like [4] alone. From the end it does not (the first
    item of three sits two positions before the last), which is what strands a cold-start
    customer's last source item on a merged timeline."""
    dm = InteractionDataModule(tiny_source, "B", batch_size=64, sequence_len=8, seed=0)
    start = small_model(dm, positions="from_start").eval()
    end = small_model(dm, positions="from_end").eval()
    end.load_state_dict(start.state_dict())
    three, one = torch.tensor([[PAD, 4, 9, 2]]), torch.tensor([[PAD, PAD, PAD, 4]])
    assert torch.allclose(start.encode(three)[:, 1], start.encode(one)[:, -1], atol=1e-5)
    assert not torch.allclose(end.encode(three)[:, 1], end.encode(one)[:, -1], atol=1e-3)
    # padding in front (a batch cut to a longer customer's width) changes neither
    for model in (start, end):
        assert torch.allclose(model.encode(three)[:, -1], model.encode(three[:, 1:])[:, -1], atol=1e-5)


def test_negatives_come_only_from_items_the_training_sequences_contain(tiny_source):
    """New items (held out of training) and, for zero-shot training, the target store's items are
    never drawn as negatives: the model is not taught to rank them last before it sees them."""
    dm = InteractionDataModule(tiny_source, "B", split="new_items", new_item_share=0.2, new_item_valid_share=0.1, batch_size=64, sequence_len=8, seed=0)
    model = small_model(dm, loss="sampled", num_sampled=64)
    quiet_trainer(max_epochs=1, limit_val_batches=0).fit(model, dm)
    seen = set((np.flatnonzero(dm.index.item_counts("B", "train") > 0) + 1).tolist())
    rows = set(model.negative_rows.tolist())
    assert rows and rows <= seen and len(rows) < model.num_input_items
    assert set(model._negatives((4000,)).tolist()) <= rows
    zero = CrossDomainDataModule(tiny_source, "A", "B", batch_size=64, sequence_len=8, seed=0, sequence_stores="source")
    model = small_model(zero, loss="bce")
    quiet_trainer(max_epochs=1, limit_val_batches=0).fit(model, zero)
    assert 0 < model.negative_rows.max() <= zero.num_source_items  # source rows come first
    assert "negative_rows" not in model.state_dict()  # training only: checkpoints stay loadable
