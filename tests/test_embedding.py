"""The package's Embedding: nn.Embedding's values and gradients, bit for bit, by a faster CPU path."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from crossrec_lit.models.embedding import Embedding


@pytest.mark.parametrize("shape", [(64,), (64, 1), (32, 5), (0,)])
def test_values_and_gradients_equal_nn_embeddings(shape):
    torch.manual_seed(0)
    ours = Embedding(40, 8)
    ref = nn.Embedding(40, 8)
    ref.load_state_dict(ours.state_dict())
    # few rows, so most indices repeat: their gradients must be summed in the same order
    idx = torch.randint(0, 6, shape)
    grad_out = torch.randn(*shape, 8)
    out, expected = ours(idx), ref(idx)
    assert torch.equal(out, expected)
    out.backward(grad_out)
    expected.backward(grad_out)
    assert torch.equal(ours.weight.grad, ref.weight.grad)


def test_sparse_frozen_and_no_grad_lookups_are_torchs_own():
    sparse = Embedding(10, 4, sparse=True)
    sparse(torch.tensor([1, 2, 2])).sum().backward()
    assert sparse.weight.grad.is_sparse
    frozen = Embedding.from_pretrained(torch.randn(10, 4))
    assert not frozen(torch.tensor([3])).requires_grad
    trained = Embedding(10, 4)
    with torch.no_grad():
        assert torch.equal(trained(torch.tensor([1, 1])), trained.weight[[1, 1]])


def test_bad_indices_fail_as_torchs_do():
    emb = Embedding(5, 3)
    with pytest.raises((IndexError, RuntimeError), match="out of range"):
        emb(torch.tensor([5]))
    with pytest.raises(RuntimeError, match="Long, Int"):
        emb(torch.tensor([1.0]))
