"""SASRec: a causal self-attention model over each customer's purchase sequence (Kang and McAuley, 2018).

The customer's state is the transformer's output at their most recent purchase; an item's score
is its dot product with that state, through the same item table the input uses. Training predicts
the next item at every position of the sequence. The transformer blocks are torch's own
(``nn.TransformerEncoderLayer``), not a re-implementation.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from crossrec_lit.data.sequences import PAD
from crossrec_lit.errors import CrossRecError
from crossrec_lit.models.base import RecommenderModule

LOSSES = ("ce", "sampled", "bce")
POSITIONS = ("from_end", "from_start")


class SASRec(RecommenderModule):
    """Self-attentive sequential recommendation over one store.

    Train it with a DataModule that serves sequences (``sequence_len`` equal to ``max_len``).
    Evaluation uses the standard leave-one-out protocol: at validation the input is the training
    sequence; at test it is the training sequence followed by the validation item (known by then,
    as in RecBole and the SASRec paper). Both are taken from the DataModule when training starts
    and kept in the checkpoint, so a loaded model scores without data.

    Args:
        max_len: items of history the model reads (the most recent ones).
        embedding_dim: width of item vectors and of the transformer.
        num_blocks / num_heads / ffn_dim: transformer blocks, attention heads per block, and the
            width of each block's feed-forward layer.
        dropout: dropout on the input embeddings, attention weights and block outputs.
        loss: ``ce`` (full softmax over every item at every position), ``sampled`` (softmax over
            the target and ``num_sampled`` random items shared by the batch; accidental hits
            masked) or ``bce`` (the paper's loss: one random negative per position).
        num_sampled: shared negatives per batch for ``loss="sampled"``.
        l2_reg: L2 penalty on the item vectors in the batch (besides the optimiser's weight_decay).
        positions: what a position embedding counts: ``from_end`` (the SASRec paper's: the most
            recent item always has the last position) or ``from_start`` (an item's rank in the
            customer's history, as in RecBole: the first purchase has position 0). On a merged
            two-store timeline ``from_start`` gives a customer's first target purchase the same
            position whether or not their target history follows it, which is what a cold-start
            customer's prediction needs (with ``from_end`` their last source item sits where
            training only ever showed target items).
        num_input_items: size of the vocabulary the sequences are written in, when it is larger
            than the ranked catalogue: a :class:`~crossrec_lit.data.CrossDomainDataModule` with
            ``sequence_len`` serves both stores' histories in one vocabulary, source items first
            and the ``num_items`` target items last (the runner links it). The model then learns
            to predict the next item of either store, and ranks the target items only. Default:
            ``num_items`` (one store).
    """

    def __init__(
        self,
        num_users: int,
        num_items: int,
        *,
        max_len: int = 50,
        embedding_dim: int = 64,
        num_blocks: int = 2,
        num_heads: int = 2,
        ffn_dim: int = 256,
        dropout: float = 0.2,
        loss: str = "ce",
        num_sampled: int = 1024,
        l2_reg: float = 0.0,
        positions: str = "from_end",
        num_input_items: int | None = None,
        **kwargs,
    ):
        super().__init__(num_users, num_items, **kwargs)
        num_input_items = self.num_items if num_input_items is None else int(num_input_items)
        if num_input_items < self.num_items:
            raise CrossRecError(
                f"num_input_items={num_input_items} is smaller than the {self.num_items} items ranked",
                "leave it unset for one store; a cross-domain DataModule links it (source + target items)",
            )
        if loss not in LOSSES:
            raise CrossRecError(f"unknown loss {loss!r}", f"use one of {list(LOSSES)}")
        if positions not in POSITIONS:
            raise CrossRecError(f"unknown positions {positions!r}", f"use one of {list(POSITIONS)}")
        if embedding_dim % num_heads:
            raise CrossRecError(f"embedding_dim={embedding_dim} is not divisible by num_heads={num_heads}", "pick num_heads dividing embedding_dim, e.g. 1 or 2 for 64")
        if max_len < 1 or num_blocks < 1 or not 0.0 <= dropout < 1.0 or num_sampled < 1:
            raise CrossRecError(
                f"max_len={max_len}, num_blocks={num_blocks}, dropout={dropout}, num_sampled={num_sampled} out of range",
                "use max_len >= 1, num_blocks >= 1, 0 <= dropout < 1, num_sampled >= 1",
            )
        if self.optimizer_name == "sparse_adam":
            raise CrossRecError("SASRec has dense transformer weights, which sparse_adam cannot step", "use optimizer='adam' or 'adamw'")
        self.save_hyperparameters()
        self.max_len, self.loss_name, self.num_sampled, self.l2_reg = int(max_len), loss, int(num_sampled), float(l2_reg)
        self.num_heads = int(num_heads)
        self.positions = positions
        self.num_input_items = num_input_items
        # the ranked (target) items are the last num_items rows of the vocabulary
        self.first_ranked = 1 + num_input_items - self.num_items
        self.item_emb = nn.Embedding(num_input_items + 1, embedding_dim, padding_idx=PAD)  # row 0: padding
        self.pos_emb = nn.Embedding(max_len, embedding_dim)
        self.input_norm = nn.LayerNorm(embedding_dim)
        self.input_dropout = nn.Dropout(dropout)
        block = nn.TransformerEncoderLayer(embedding_dim, num_heads, ffn_dim, dropout, activation="gelu", batch_first=True)
        self.blocks = nn.TransformerEncoder(block, num_blocks, enable_nested_tensor=False)
        nn.init.normal_(self.item_emb.weight, std=0.02)
        nn.init.normal_(self.pos_emb.weight, std=0.02)
        with torch.no_grad():
            self.item_emb.weight[PAD].zero_()
        # the sequences a checkpoint scores from: at validation, and at test (with the valid item)
        self.register_buffer("valid_history", torch.zeros(num_users, max_len, dtype=torch.long))
        self.register_buffer("test_history", torch.zeros(num_users, max_len, dtype=torch.long))
        # the rows negatives are drawn from: those the training sequences contain (empty: every
        # row). Items that first appear after training (new items, or the target store when only
        # the source trains) are not taught to rank last. Training only: not in the checkpoint.
        self.register_buffer("negative_rows", torch.zeros(0, dtype=torch.long), persistent=False)
        self._eval_history = "test_history"  # what full_scores reads outside validation

    # ------------------------------------------------------------------ data binding
    def bind_data(self, datamodule) -> None:
        if getattr(datamodule, "sequence_len", None) != self.max_len:
            raise CrossRecError(
                f"SASRec(max_len={self.max_len}) trains on sequences, but the DataModule serves "
                + ("interactions" if getattr(datamodule, "sequence_len", None) is None else f"sequences of {datamodule.sequence_len}"),
                f"build the DataModule with sequence_len={self.max_len} (in a config: data init_args or the model's data: section)",
            )
        vocabulary = getattr(datamodule, "num_input_items", datamodule.num_items)
        if (datamodule.num_users, datamodule.num_items, vocabulary) != (self.num_users, self.num_items, self.num_input_items):
            raise CrossRecError(
                f"SASRec was built for {self.num_users} users, {self.num_items} ranked items and {self.num_input_items} input items; "
                f"the DataModule has {datamodule.num_users}, {datamodule.num_items} and {vocabulary}",
                "build the model from this DataModule (dm.model_arguments_for(SASRec))",
            )
        self.valid_history.copy_(torch.from_numpy(datamodule.sequences("train", self.max_len)))
        self.test_history.copy_(torch.from_numpy(datamodule.sequences(("train", "valid"), self.max_len)))
        trained = np.unique(datamodule.training_sequences(self.max_len + 1))
        trained = torch.from_numpy(trained[trained != PAD])
        self.negative_rows = trained if len(trained) < self.num_input_items else trained[:0]

    def _negatives(self, shape) -> torch.Tensor:
        """Random vocabulary rows among :attr:`negative_rows` (every row when it is empty)."""
        if self.negative_rows.numel():
            return self.negative_rows[torch.randint(0, len(self.negative_rows), shape, device=self.negative_rows.device)]
        return torch.randint(1, self.num_input_items + 1, shape, device=self.negative_rows.device)

    def on_validation_epoch_start(self) -> None:
        super().on_validation_epoch_start()
        self._eval_history = "valid_history"

    def on_validation_epoch_end(self) -> None:
        self._eval_history = "test_history"
        super().on_validation_epoch_end()

    # ------------------------------------------------------------------ the network
    def _inputs(self, sequences: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The first block's input [B, L, d] and the attention mask [B * heads, L, L] (True: blocked)."""
        length = sequences.shape[1]
        pad = sequences == PAD
        if self.positions == "from_end":
            positions = torch.arange(self.max_len - length, self.max_len, device=sequences.device)[None]
        else:
            # right-aligned rows: an item's rank in its history is its column minus the padding
            positions = (torch.arange(length, device=sequences.device)[None] - pad.sum(1, keepdim=True)).clamp_(min=0)
        x = self.item_vectors(sequences) + self.pos_emb(positions)
        x = self.input_dropout(self.input_norm(x))
        # causal, and no attention to padding; every position may see itself, so that a padded
        # position's row is never fully masked (its output is never used)
        mask = torch.triu(torch.ones(length, length, dtype=torch.bool, device=x.device), 1)[None] | pad[:, None, :]
        mask &= ~torch.eye(length, dtype=torch.bool, device=x.device)[None]
        return x, mask.repeat_interleave(self.num_heads, 0)

    def encode(self, sequences: torch.Tensor) -> torch.Tensor:
        """[B, L, d] states of right-aligned ``sequences`` [B, L] (L <= max_len); the state at t
        has seen the items up to t only."""
        x, mask = self._inputs(sequences)
        return self.blocks(x, mask=mask)

    @torch.no_grad()
    def attention(self, sequence: torch.Tensor) -> torch.Tensor:
        """[num_blocks, L, L] attention weights (mean over heads) of every block for one
        right-aligned ``sequence`` [L] (e.g. a row of :attr:`test_history`, padding cut off): row t
        says how much the state at t drew on each earlier purchase. Computed in eval mode."""
        was_training = self.training
        self.eval()
        x, mask = self._inputs(torch.as_tensor(sequence, device=self.device).reshape(1, -1))
        weights = []
        for layer in self.blocks.layers:
            # the block's own attention module, asked for the weights its forward pass discards
            weights.append(layer.self_attn(x, x, x, attn_mask=mask, need_weights=True, average_attn_weights=True)[1][0])
            x = layer(x, src_mask=mask)
        self.train(was_training)
        return torch.stack(weights)

    def user_states(self, users: torch.Tensor) -> torch.Tensor:
        history = getattr(self, self._eval_history)[users]
        return self.encode(history)[:, -1]

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        users, items = torch.broadcast_tensors(torch.as_tensor(users), torch.as_tensor(items))
        flat_users, inverse = torch.unique(users.reshape(-1), return_inverse=True)
        states = self.user_states(flat_users)[inverse]
        return (states * self.item_vectors(items.reshape(-1) + self.first_ranked)).sum(-1).reshape(users.shape)

    def full_scores(self, users: torch.Tensor) -> torch.Tensor:
        return self.user_states(users) @ self.all_item_vectors()[self.first_ranked - 1 :].T

    # ------------------------------------------------------------------ item vectors
    def item_vectors(self, rows: torch.Tensor) -> torch.Tensor:
        """Vectors of vocabulary rows (item + 1; row 0 is padding), any shape -> [..., d]: what the
        sequence reads and what a score multiplies. A subclass may compute them otherwise (from
        item text, see :class:`~crossrec_lit.models.TextSASRec`)."""
        return self.item_emb(rows)

    def all_item_vectors(self) -> torch.Tensor:
        """[num_input_items, d] vectors of every item of the vocabulary (rows 1..), in order."""
        return self.item_emb.weight[1:]

    # ------------------------------------------------------------------ training
    def loss(self, batch: dict) -> torch.Tensor:
        if "inputs" not in batch:
            raise CrossRecError("SASRec got a batch of interactions, not sequences", f"build the DataModule with sequence_len={self.max_len}")
        inputs, targets = batch["inputs"], batch["targets"]
        states = self.encode(inputs)
        keep = targets != PAD  # positions with a next item
        h, y = states[keep], targets[keep]  # [N, d], [N] (items + 1)
        if self.loss_name == "ce":
            logits = h @ self.all_item_vectors().T
            if self.negative_rows.numel():
                outside = torch.ones(self.num_input_items, dtype=torch.bool, device=logits.device)
                outside[self.negative_rows - 1] = False
                logits = logits.masked_fill(outside, float("-inf"))
            loss = F.cross_entropy(logits, y - 1)
        elif self.loss_name == "sampled":
            negatives = self._negatives((self.num_sampled,))
            vectors = self.item_vectors(torch.cat([y, negatives]))
            positive = (h * vectors[: len(y)]).sum(-1, keepdim=True)
            negative = h @ vectors[len(y) :].T
            negative = negative.masked_fill(negatives[None] == y[:, None], float("-inf"))  # accidental hits
            loss = F.cross_entropy(torch.cat([positive, negative], 1), torch.zeros(len(y), dtype=torch.long, device=h.device))
        else:
            negatives = self._negatives(y.shape)
            vectors = self.item_vectors(torch.cat([y, negatives]))
            positive = (h * vectors[: len(y)]).sum(-1)
            negative = (h * vectors[len(y) :]).sum(-1)
            loss = F.binary_cross_entropy_with_logits(positive, torch.ones_like(positive)) + F.binary_cross_entropy_with_logits(negative, torch.zeros_like(negative))
        if self.l2_reg:
            loss = loss + self.l2_reg * self.item_vectors(y).pow(2).sum(-1).mean()
        return loss
