"""LazyAdam: SparseAdam's update, bit for bit, at a cost that follows the batch."""

from __future__ import annotations

import pytest
import torch

from crossrec_lit.errors import CrossRecError
from crossrec_lit.optim import LazyAdam


def _train(opt_cls, steps: int = 6, state=None):
    torch.manual_seed(0)
    emb = torch.nn.Embedding(50, 8, sparse=True)
    opt = opt_cls(emb.parameters(), lr=0.05)
    if state is not None:
        opt.load_state_dict(state)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        # repeated rows in a batch: their gradients must be summed before the non-linear update
        rows = torch.randint(0, 20, (64,), generator=g)
        target = torch.randn(64, 8, generator=g)
        loss = ((emb(rows) - target) ** 2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return emb.weight.detach().clone(), opt


def test_lazy_adam_gives_sparse_adams_floats():
    ours, opt = _train(LazyAdam)
    torch_, ref = _train(torch.optim.SparseAdam)
    assert torch.equal(ours, torch_)
    p = next(iter(opt.state))
    q = next(iter(ref.state))
    for key in ("exp_avg", "exp_avg_sq"):
        assert torch.equal(opt.state[p][key], ref.state[q][key])
    assert opt.state[p]["step"] == ref.state[q]["step"] == 6
    # rows no batch touched keep their initial values and zero moments (lazy: no decay)
    assert torch.equal(opt.state[p]["exp_avg"][20:], torch.zeros(30, 8))


def test_lazy_adam_resumes_from_a_sparse_adam_state():
    # a checkpoint written while the package used torch's SparseAdam resumes with the same floats
    _, ref = _train(torch.optim.SparseAdam, steps=3)
    _, ours = _train(LazyAdam, steps=3)
    assert ours.state_dict()["state"].keys() == ref.state_dict()["state"].keys()
    for key in ("exp_avg", "exp_avg_sq", "step"):
        a, b = ours.state_dict()["state"][0][key], ref.state_dict()["state"][0][key]
        assert torch.equal(torch.as_tensor(a), torch.as_tensor(b))


def test_lazy_adam_refuses_dense_gradients_with_the_fix():
    layer = torch.nn.Linear(3, 1)
    opt = LazyAdam(layer.parameters())
    layer(torch.ones(2, 3)).sum().backward()
    with pytest.raises(CrossRecError, match=r"dense gradient.*sparse=True|optimizer='adam'"):
        opt.step()


@pytest.mark.parametrize("kwargs, message", [({"lr": 0}, "learning rate"), ({"betas": (1.0, 0.9)}, "betas"), ({"eps": 0}, "eps")])
def test_lazy_adam_checks_its_settings(kwargs, message):
    with pytest.raises(CrossRecError, match=message):
        LazyAdam([torch.nn.Parameter(torch.zeros(2))], **kwargs)
