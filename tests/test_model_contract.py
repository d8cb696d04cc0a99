"""The base models under the shared contract (tests/contract.py)."""

from __future__ import annotations

import pytest
import torch

from contract import ALL_CHECKS, Case, check_contract
from conftest import quiet_trainer
from crossrec_lit.data import CrossDomainDataModule, InteractionDataModule
from crossrec_lit.models import BPRMF, MF, Popularity, SASRec


def single(source):
    return InteractionDataModule(source, "B", batch_size=256, num_negatives=2, seed=0)


def sequences(source):
    return InteractionDataModule(source, "B", batch_size=64, sequence_len=10, seed=0)


CASES = {
    "Popularity": Case(lambda dm: Popularity(**dm.model_arguments_for(Popularity)), single, epochs=1),
    "MF": Case(lambda dm: MF(dm.num_users, dm.num_items, embedding_dim=16, lr=0.01), single),
    "BPRMF": Case(lambda dm: BPRMF(dm.num_users, dm.num_items, embedding_dim=16, lr=0.01), single),
    "BPRMF-sparse": Case(lambda dm: BPRMF(dm.num_users, dm.num_items, embedding_dim=16, lr=0.01, optimizer="sparse_adam"), single),
    "SASRec": Case(lambda dm: SASRec(**dm.model_arguments_for(SASRec), max_len=10, embedding_dim=16, ffn_dim=32, lr=0.01), sequences),
    "SASRec-sampled": Case(lambda dm: SASRec(**dm.model_arguments_for(SASRec), max_len=10, embedding_dim=16, ffn_dim=32, lr=0.01, loss="sampled", num_sampled=16), sequences),
    "SASRec-bce": Case(lambda dm: SASRec(**dm.model_arguments_for(SASRec), max_len=10, embedding_dim=16, ffn_dim=32, lr=0.01, loss="bce"), sequences),
}


@pytest.mark.parametrize("check", sorted(ALL_CHECKS))
@pytest.mark.parametrize("model", sorted(CASES))
def test_contract(model, check, tiny_source, tmp_path):
    check_contract(check, CASES[model], tiny_source, tmp_path)


def test_single_domain_models_train_on_a_cross_domain_datamodule(tiny_source):
    dm = CrossDomainDataModule(tiny_source, "A", "B", batch_size=256, phase="target")
    model = BPRMF(dm.num_users, dm.num_items, embedding_dim=8)
    quiet_trainer(max_epochs=1).fit(model, dm)
    assert model.full_scores(torch.arange(3)).shape == (3, dm.num_items)


def test_single_domain_model_refuses_two_sides(tiny_source):
    from crossrec_lit import CrossRecError

    dm = CrossDomainDataModule(tiny_source, "A", "B", batch_size=256, phase="both")
    model = BPRMF(dm.num_users, dm.num_items, embedding_dim=8)
    with pytest.raises(CrossRecError, match="single-domain model got a batch with parts"):
        quiet_trainer(max_epochs=1).fit(model, dm)
