"""An ``nn.Embedding`` whose dense backward on CPU is one ``index_add_``.

Why: torch's CPU ``embedding_dense_backward`` adds the gradient rows into the table one
TensorIterator call per row; a single ``index_add_`` into a zeroed table does the same sum in the
same order (the gradients are equal bit for bit, duplicates included: ``tests/test_embedding.py``)
and was measured 0.85 -> 0.64 ms per lookup of 4,096 rows into a Toys-sized user table (19,412 x
64, one thread). BPR-MF looks up three times per step, so this is worth about a tenth of a step.

Everything else is ``nn.Embedding``'s: the same parameter, state-dict keys and ``sparse=True``
path (sparse gradients come from torch's kernel). Off CPU, or with ``padding_idx``, ``max_norm``
or ``scale_grad_by_freq``, the lookup is torch's own (on GPU ``index_add_`` adds in no fixed
order, so results would stop being reproducible).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["Embedding"]


class _Lookup(torch.autograd.Function):
    @staticmethod
    def forward(ctx, weight: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(indices)
        ctx.rows = weight.shape[0]
        return weight.index_select(0, indices.reshape(-1)).view(*indices.shape, weight.shape[1])

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (indices,) = ctx.saved_tensors
        flat = grad_out.reshape(-1, grad_out.shape[-1])
        grad = flat.new_zeros(ctx.rows, flat.shape[1]).index_add_(0, indices.reshape(-1), flat)
        return grad, None


class Embedding(nn.Embedding):
    """``nn.Embedding`` with a faster dense backward on CPU (see the module docstring)."""

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        plain = self.sparse or self.padding_idx is not None or self.max_norm is not None or self.scale_grad_by_freq
        if plain or self.weight.device.type != "cpu" or not torch.is_grad_enabled() or not self.weight.requires_grad:
            return F.embedding(indices, self.weight, self.padding_idx, self.max_norm, self.norm_type, self.scale_grad_by_freq, self.sparse)
        if indices.dtype not in (torch.int64, torch.int32):
            # as F.embedding would: the message names the dtype it got
            raise RuntimeError(f"Expected tensor for argument #1 'indices' to have one of the following scalar types: Long, Int; but got {indices.dtype} instead")
        return _Lookup.apply(self.weight, indices)
