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
    with pytest.raises(CrossRecError, match="not supported by CrossDomainDataModule"):
        CrossDomainDataModule(tiny_source, "A", "B", sequence_len=8)
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
