"""TextSASRec: SASRec whose items are read from their text, so what it learns in one store reads
another store's products, and products nobody has bought yet.

An item's vector is ``adaptor(text_i)``: the item's title embedded once by a frozen pretrained
sentence encoder (all-MiniLM-L6-v2 by default, as in :class:`~crossrec_lit.models.TextTwoTower`),
mapped by a trainable adaptor (UniSRec's mixture of whitening experts by default; Hou et al., KDD
2022). The same vector is what the sequence reads and what a score multiplies, so the transformer
never sees an item id: a model trained on Beauty and Sports can be applied to Toys as it is
(zero-shot), or fine-tuned there. With ``hybrid=True`` a trainable id vector, zero at the start and
zero for items without training purchases, is added to the text part (UniSRec's "text + ID").
"""

from __future__ import annotations

import torch
from torch import nn

from crossrec_lit.errors import CrossRecError
from crossrec_lit.models.sequential import SASRec
from crossrec_lit.models.text import ADAPTORS, _encoder_dim, _make_adaptor, encode_item_text


class TextSASRec(SASRec):
    """SASRec over frozen item-text vectors and a trainable adaptor (see the module docstring).

    Trains and evaluates as :class:`~crossrec_lit.models.SASRec` does, with the same DataModules:
    one store (``InteractionDataModule(sequence_len=...)``), both stores on one timeline
    (``CrossDomainDataModule(sequence_len=..., sequence_stores="merged")``) or trained on the source
    store's sequences and scored from the target's (``sequence_stores="source"``: zero-shot by
    construction). A model with nothing left to train (every module frozen by
    :class:`~crossrec_lit.transfer.FreezeUnfreeze`, e.g. a pretrained one applied zero-shot) skips
    its training steps and is only evaluated.

    Args:
        encoder / text_cache / hashing_dim / text_dim: as in :class:`~crossrec_lit.models.TextTwoTower`.
        adaptor: ``"moe"`` (default), ``"mlp"`` or ``"linear"``.
        n_experts: experts of the MoE adaptor.
        adaptor_dropout: dropout on the adapted vectors in training.
        hybrid: add a trainable id vector per item (zero-initialised; zero for items without
            training purchases, so those are ranked by their text alone).
        **kwargs: as in :class:`~crossrec_lit.models.SASRec` (``max_len``, ``embedding_dim``,
            ``num_blocks``, ``loss``, ``positions``...).
    """

    def __init__(
        self,
        num_users: int,
        num_items: int,
        *,
        encoder: str = "minilm",
        text_cache: str | None = None,
        adaptor: str = "moe",
        n_experts: int = 8,
        adaptor_dropout: float = 0.2,
        hybrid: bool = False,
        hashing_dim: int = 512,
        text_dim: int | None = None,
        **kwargs,
    ):
        super().__init__(num_users, num_items, **kwargs)
        if adaptor not in ADAPTORS:
            raise CrossRecError(f"unknown adaptor {adaptor!r}", f"use one of {list(ADAPTORS)}")
        if int(n_experts) < 1 or not 0.0 <= float(adaptor_dropout) < 1.0:
            raise CrossRecError(f"n_experts={n_experts} must be >= 1 and adaptor_dropout={adaptor_dropout} in [0, 1)", "use e.g. n_experts=8, adaptor_dropout=0.2")
        encoder = str(encoder)
        text_dim = int(text_dim) if text_dim is not None else _encoder_dim(encoder, int(hashing_dim))
        self.hparams["text_dim"] = text_dim  # resolved, so a checkpoint loads without the encoder
        self.encoder_name, self.text_cache, self.hashing_dim, self.text_dim = encoder, text_cache, int(hashing_dim), text_dim
        self.hybrid = bool(hybrid)
        dim = self.pos_emb.embedding_dim
        self.adaptor = _make_adaptor(adaptor, text_dim, dim, int(n_experts), float(adaptor_dropout))
        if self.hybrid:
            nn.init.zeros_(self.item_emb.weight)  # the id part starts at nothing: text alone first
        else:
            del self.item_emb  # no id vectors: nothing in the model is tied to one store's items
        # data-derived (bind_data): the text of every vocabulary row (row 0: padding) and which
        # rows have training purchases (the id part of the others stays zero)
        self.register_buffer("item_text", torch.zeros(self.num_input_items + 1, text_dim))
        self.register_buffer("item_trained", torch.zeros(self.num_input_items + 1, dtype=torch.bool))
        self.register_buffer("text_bound", torch.zeros((), dtype=torch.bool))

    # ------------------------------------------------------------------ data
    def bind_data(self, datamodule) -> None:
        super().bind_data(datamodule)
        text = datamodule.source.item_text()
        if text is None:
            raise CrossRecError(
                f"TextSASRec needs item text, but {type(datamodule.source).__name__} has none (item_text() is None)",
                "use a data source with item titles (AmazonP5, Synthetic, a TableSource with text=...), or SASRec",
            )
        idx = datamodule.index
        # the vocabulary's stores in row order: the source's items first when it holds two
        if self.num_input_items > self.num_items:
            stores = [(datamodule.source_domain, datamodule.source_item_vocab), (datamodule.target_domain, datamodule.target_item_vocab)]
        else:
            stores = [(datamodule.eval_domain, datamodule.item_vocab)]
        matrices = encode_item_text(text, dict(stores), encoder=self.encoder_name, text_dim=self.text_dim, hashing_dim=self.hashing_dim, text_cache=self.text_cache)
        row = 1
        for domain, vocab in stores:
            n = len(vocab)
            self.item_text[row : row + n] = torch.as_tensor(matrices[domain])
            self.item_trained[row : row + n] = torch.from_numpy(idx.item_counts(domain, "train") > 0)
            row += n
        self.text_bound.fill_(True)

    # ------------------------------------------------------------------ item vectors
    def _require_bound(self) -> None:
        if not bool(self.text_bound):
            raise CrossRecError("TextSASRec has no item text yet (bind_data has not run)", "train it with trainer.fit(model, datamodule) or load a trained checkpoint")

    def _vectors(self, rows: torch.Tensor) -> torch.Tensor:
        out = self.adaptor(self.item_text[rows])
        if self.hybrid:
            out = out + self.item_emb(rows) * self.item_trained[rows, None]
        return out

    def item_vectors(self, rows: torch.Tensor) -> torch.Tensor:
        self._require_bound()
        # the adaptor runs once per distinct item of the batch, not once per position
        unique, inverse = torch.unique(rows, return_inverse=True)
        return self._vectors(unique)[inverse]

    def all_item_vectors(self) -> torch.Tensor:
        self._require_bound()
        cache = self.__dict__.get("_evaluation_vectors")  # a list while an evaluation loop runs
        cached = cache is not None and not torch.is_grad_enabled()
        if cached and cache:
            return cache[0]
        vectors = self._vectors(torch.arange(1, self.num_input_items + 1, device=self.item_text.device))
        if cached:
            cache.append(vectors)
        return vectors

    # ------------------------------------------------------------------ evaluation
    # Every batch of one validation or test ranks all items with the same weights, so the adaptor
    # maps every title once per evaluation, not once per batch of users (measured, one thread: 0.21 s
    # to adapt 36,000 titles by the MoE, 0.35 s to score and rank a batch of 1,024 users). Scoped to
    # Lightning's evaluation loops: weights change between them, and a model scored by hand recomputes.
    def _evaluation_cache(self, on: bool) -> None:
        self.__dict__["_evaluation_vectors"] = [] if on else None

    def on_validation_epoch_start(self) -> None:
        super().on_validation_epoch_start()
        self._evaluation_cache(True)

    def on_validation_epoch_end(self) -> None:
        self._evaluation_cache(False)
        super().on_validation_epoch_end()

    def on_test_epoch_start(self) -> None:
        super().on_test_epoch_start()
        self._evaluation_cache(True)

    def on_test_epoch_end(self) -> None:
        self._evaluation_cache(False)
        super().on_test_epoch_end()

    # ------------------------------------------------------------------ training
    def on_train_start(self) -> None:
        # everything frozen (a pretrained model applied zero-shot): no step to take, so the epochs
        # only evaluate, as the counting baselines' do
        self.automatic_optimization = any(p.requires_grad for p in self.parameters())

    def training_step(self, batch, batch_idx):
        if not self.automatic_optimization:
            return None
        return super().training_step(batch, batch_idx)


__all__ = ["TextSASRec"]
