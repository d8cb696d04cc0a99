"""TextSASRec: SASRec over frozen item-text vectors (hashing encoder here: fast, no model files)."""

from __future__ import annotations

import pytest
import torch

from conftest import quiet_trainer
from crossrec_lit import CrossRecError
from crossrec_lit.data import CrossDomainDataModule, InteractionDataModule
from crossrec_lit.models import TextSASRec
from crossrec_lit.transfer import FreezeUnfreeze, LoadSourceWeights

TRANSFERRED = ["adaptor", "blocks", "pos_emb", "input_norm"]


def build(dm, tmp_path, **kwargs):
    args = {"max_len": 8, "embedding_dim": 16, "ffn_dim": 32, "encoder": "hashing", "hashing_dim": 64, "text_cache": str(tmp_path / "text"),
            "loss": "sampled", "num_sampled": 32, "lr": 0.01, **kwargs}  # fmt: skip
    return TextSASRec(**dm.model_arguments_for(TextSASRec), **args)


def test_items_are_read_from_their_text_and_no_id_table_exists(tiny_source, tmp_path):
    dm = InteractionDataModule(tiny_source, "B", batch_size=64, sequence_len=8, seed=0)
    model = build(dm, tmp_path)
    with pytest.raises(CrossRecError, match="no item text yet"):
        model.all_item_vectors()
    trainer = quiet_trainer(max_epochs=2)
    trainer.fit(model, dm)
    assert not any(name.startswith("item_emb") for name in model.state_dict())
    assert model.item_text[0].abs().sum() == 0 and model.item_text[1:].abs().sum(1).gt(0).all()  # row 0: padding
    # two items with the same text get the same vector: nothing else tells them apart
    twin = model.item_text[1:].clone()
    twin[1] = twin[0]
    model.eval()
    with torch.no_grad():
        vectors = model.adaptor(twin)
    assert torch.allclose(vectors[0], vectors[1])
    metrics = trainer.test(model, dm, verbose=False)[0]
    assert 0.0 <= metrics["test/ndcg@10"] <= 1.0
    # the checkpoint scores without data or encoder: the text is in it
    path = tmp_path / "text_sasrec.ckpt"
    trainer.save_checkpoint(path)
    loaded = TextSASRec.load_from_checkpoint(path)
    users = torch.arange(20)
    assert torch.allclose(loaded.eval().full_scores(users), model.full_scores(users), atol=1e-5)


def test_hybrid_id_vectors_leave_items_without_purchases_to_their_text(tiny_source, tmp_path):
    dm = InteractionDataModule(tiny_source, "B", split="new_items", new_item_share=0.2, new_item_valid_share=0.1, batch_size=64, sequence_len=8, seed=0)
    model = build(dm, tmp_path, hybrid=True)
    quiet_trainer(max_epochs=2, limit_val_batches=0).fit(model, dm)
    new = torch.nonzero(~model.item_trained[1:]).flatten() + 1
    old = torch.nonzero(model.item_trained[1:]).flatten() + 1
    assert len(new) > 0 and model.item_emb.weight[old].abs().sum() > 0  # trained items learned an id part
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model.item_vectors(new), model.adaptor(model.item_text[new]))


def test_a_model_pretrained_on_other_stores_applies_to_the_target_as_it_is(tiny_source, tmp_path):
    """Zero-shot: trained on store A's sequences only, the text model's weights go into a model for
    store B, where every transferred module stays frozen: B's training changes nothing, and the
    model ranks B's items it never trained on."""
    source_dm = CrossDomainDataModule(tiny_source, "B", "A", batch_size=64, sequence_len=8, seed=0, sequence_stores="source")
    pretrained = build(source_dm, tmp_path)
    trainer = quiet_trainer(max_epochs=2, limit_val_batches=0)
    trainer.fit(pretrained, source_dm)
    path = tmp_path / "pretrained.ckpt"
    trainer.save_checkpoint(path)

    target_dm = InteractionDataModule(tiny_source, "B", batch_size=64, sequence_len=8, seed=0)
    model = build(target_dm, tmp_path)
    mapping = {name: name for name in TRANSFERRED}
    callbacks = [LoadSourceWeights(str(path), mapping=mapping), FreezeUnfreeze(TRANSFERRED, unfreeze_at_epoch=None)]
    trainer = quiet_trainer(max_epochs=1, callbacks=callbacks)
    trainer.fit(model, target_dm)
    source_state = pretrained.state_dict()
    for name, value in model.state_dict().items():
        if name.split(".")[0] in TRANSFERRED:
            assert torch.equal(value, source_state[name]), name  # loaded, and not trained on B
    assert 0.0 <= trainer.test(model, target_dm, verbose=False)[0]["test/ndcg@10"] <= 1.0


def test_bad_settings_are_refused(tiny_source):
    with pytest.raises(CrossRecError, match="unknown adaptor"):
        TextSASRec(10, 20, adaptor="transformer", encoder="hashing")
    with pytest.raises(CrossRecError, match="n_experts"):
        TextSASRec(10, 20, n_experts=0, encoder="hashing")


def test_an_evaluation_adapts_every_title_once_and_ranks_as_without_the_cache(tiny_source, tmp_path):
    dm = InteractionDataModule(tiny_source, "B", batch_size=64, eval_batch_size=7, sequence_len=8, seed=0)
    model = build(dm, tmp_path)
    trainer = quiet_trainer(max_epochs=1, limit_val_batches=0)
    trainer.fit(model, dm)
    whole_catalogue = []
    model.adaptor.register_forward_hook(lambda module, args, out: whole_catalogue.append(len(args[0]) == model.num_input_items))
    cached = trainer.test(model, dm, verbose=False)[0]
    scored_batches = sum(1 for batch in dm.test_dataloader() if batch["truth"].numel())
    assert scored_batches > 2 and sum(whole_catalogue) == 1  # several batches of users, the catalogue adapted once
    assert model.__dict__.get("_evaluation_vectors") is None  # nothing kept once the test is over
    # with the cache never switched on, every batch adapts the catalogue again, to the same ranking
    model._evaluation_cache = lambda on: TextSASRec._evaluation_cache(model, False)
    whole_catalogue.clear()
    assert trainer.test(model, dm, verbose=False)[0] == cached
    assert sum(whole_catalogue) == scored_batches
