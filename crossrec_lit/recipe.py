"""The seed's transfer recipe on one pair of stores, as a few calls.

BPR-MF is trained on store A; its customer vectors (and A's item vectors) are copied into a joint
model of both stores (:class:`~crossrec_lit.models.SharedUserMF`), where the customer vectors stay
frozen while store B's item vectors learn to fit them and are then released at a tenth of the step
(:class:`~crossrec_lit.transfer.FreezeUnfreeze`), with store A's loss weighted by ``weight``. A
target-only BPR-MF is the baseline; the transfer model is early-stopped on validation and watched by
a :class:`~crossrec_lit.transfer.NegativeTransferGuard` against the baseline's best validation score.
Every model is kept at its best validation epoch and tested once on the cold-start customers.

:class:`TransferRecipe` holds the settings; its methods are the steps (``fit_source``,
``fit_target_only``, ``fit_transfer``) and the whole recipe (``run``). For many models, seeds and a
search, use the experiment runner (:mod:`crossrec_lit.experiment`) instead: this is the recipe as
the book's algorithm chapter walks through it.
"""

from __future__ import annotations

import itertools
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback, EarlyStopping, ModelCheckpoint

from crossrec_lit.data import CrossDomainDataModule
from crossrec_lit.models import BPRMF, SharedUserMF, TargetOnlyMF
from crossrec_lit.training import best_checkpoint, evaluate_test, quiet_trainer
from crossrec_lit.transfer import FreezeUnfreeze, LoadSourceWeights, NegativeTransferGuard, PhaseSchedule

__all__ = ["SHARE", "TransferRecipe"]

# what the source BPR-MF's tables become in SharedUserMF: source name -> target name
SHARE = {"user_emb": "user_emb", "item_emb": "source_item_emb"}


@dataclass
class TransferRecipe:
    """Settings of the recipe and its steps.

    Args:
        workdir: folder for the checkpoints (a sub-folder per fitted model).
        embedding_dim, lr: of every model (source, target-only, transfer).
        epochs: training epochs of every model (early stopping may end the target models sooner).
        freeze_epochs: epochs the transferred customer vectors stay frozen.
        patience: validations without progress before early stopping.
        source_domain, target_domain: store names in the data.
        data: further :class:`~crossrec_lit.data.CrossDomainDataModule` arguments of :meth:`run`
            (split, shares, batch size, ...).
    """

    workdir: str | os.PathLike
    embedding_dim: int = 32
    lr: float = 0.02
    epochs: int = 20
    freeze_epochs: int = 10
    patience: int = 4
    source_domain: str = "A"
    target_domain: str = "B"
    data: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._runs = itertools.count()

    def new_run(self) -> Path:
        """A checkpoint folder no fit has used (``best_checkpoint`` keeps one ``best.ckpt`` per
        folder): a folder shared with other code, or with a copy of this recipe, never has a
        checkpoint replaced."""
        while True:
            path = Path(self.workdir) / f"recipe-run{next(self._runs)}"
            try:
                path.mkdir(parents=True)
                return path
            except FileExistsError:
                continue

    # ------------------------------------------------------------------ the transfer model
    def transfer_model(self, dm: CrossDomainDataModule, weight: float) -> SharedUserMF:
        """The joint model of both stores, store A's loss weighted by ``weight``."""
        return SharedUserMF(dm.num_users, dm.num_items, dm.num_source_items, embedding_dim=self.embedding_dim, lr=self.lr, source_weight=weight)

    def transfer_callbacks(self, checkpoint: str | os.PathLike) -> list[Callback]:
        """Copy the source model's tables, keep the customer vectors frozen for ``freeze_epochs``
        (store B only is served meanwhile), then release them at a tenth of the step on both stores."""
        return [
            LoadSourceWeights(checkpoint, mapping=SHARE),
            FreezeUnfreeze(["user_emb"], unfreeze_at_epoch=self.freeze_epochs, lr_factor=0.1),
            PhaseSchedule({0: "target", self.freeze_epochs: "both"}),
        ]

    # ------------------------------------------------------------------ the steps
    def fit_source(self, source_dm: CrossDomainDataModule, seed: int) -> tuple[BPRMF, ModelCheckpoint, float]:
        """BPR-MF on store A (``source_dm`` in phase ``source``, evaluated on A); returns the model,
        its checkpoint callback and the training seconds."""
        pl.seed_everything(seed, verbose=False)
        model = BPRMF(source_dm.num_users, source_dm.num_items, embedding_dim=self.embedding_dim, lr=self.lr)
        keep = best_checkpoint(self.new_run())
        started = time.perf_counter()
        quiet_trainer(self.epochs, [keep]).fit(model, datamodule=source_dm)
        return model, keep, time.perf_counter() - started

    def fit_target_only(self, dm: CrossDomainDataModule, seed: int) -> tuple[TargetOnlyMF, ModelCheckpoint, float]:
        """The baseline: BPR-MF on store B alone, early-stopped on validation."""
        dm.set_phase("target")
        pl.seed_everything(seed, verbose=False)
        model = TargetOnlyMF(dm.num_users, dm.num_items, embedding_dim=self.embedding_dim, lr=self.lr)
        keep = best_checkpoint(self.new_run())
        started = time.perf_counter()
        quiet_trainer(self.epochs, [keep, EarlyStopping("val/ndcg@10", mode="max", patience=self.patience)]).fit(model, datamodule=dm)
        return model, keep, time.perf_counter() - started

    def fit_transfer(self, dm: CrossDomainDataModule, seed: int, checkpoint: str | os.PathLike, weight: float, baseline: float):
        """The transfer model from the source ``checkpoint``, early-stopped (never before the
        customer vectors are released) and guarded against the baseline's best validation score.

        Returns the model, its checkpoint callback, the training seconds, the guard (``triggered``
        says whether it fired) and the epochs run."""
        pl.seed_everything(seed, verbose=False)
        model = self.transfer_model(dm, weight)
        keep = best_checkpoint(self.new_run())
        guard = NegativeTransferGuard(baseline=baseline, monitor="val/ndcg@10", patience=2, min_epochs=self.freeze_epochs // 2)
        stop = EarlyStopping("val/ndcg@10", mode="max", patience=self.patience)
        trainer = quiet_trainer(
            self.epochs, [*self.transfer_callbacks(checkpoint), keep, stop, guard], reload_dataloaders_every_n_epochs=1, min_epochs=self.freeze_epochs + 1
        )
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="negative transfer")  # the verdict is read from guard.triggered
            trainer.fit(model, datamodule=dm)
        return model, keep, time.perf_counter() - started, guard, trainer.current_epoch

    # ------------------------------------------------------------------ all of it
    def run(self, stores, seed: int, weight: float, **data_changes) -> dict:
        """The recipe on ``stores`` (a DataSource with both stores) for one seed: the cold-start test
        NDCG@10 of the transfer model and of the target-only baseline, their difference, whether the
        guard fired (with its baseline, the target-only model's best validation score, and the
        transfer model's validation curve as (epoch, score) pairs), the seconds of each fit, and the
        numbers of test and shared customers.
        ``data_changes`` override :attr:`data` for this call."""
        kw = {**self.data, **data_changes, "seed": seed}
        a, b = self.source_domain, self.target_domain
        source_dm = CrossDomainDataModule(stores, a, b, phase="source", eval_domain="source", **kw)
        dm = CrossDomainDataModule(stores, a, b, **kw)
        _, keep, source_seconds = self.fit_source(source_dm, seed)
        baseline, baseline_keep, baseline_seconds = self.fit_target_only(dm, seed)
        model, model_keep, model_seconds, guard, _ = self.fit_transfer(dm, seed, keep.best_model_path, weight, float(baseline_keep.best_model_score))
        transfer_ndcg = evaluate_test(model, dm, model_keep.best_model_path)["ndcg@10"]
        target_only_ndcg = evaluate_test(baseline, dm, baseline_keep.best_model_path)["ndcg@10"]
        return {
            "transfer": transfer_ndcg,
            "target_only": target_only_ndcg,
            "gain": transfer_ndcg - target_only_ndcg,
            "guard_fired": guard.triggered,
            "guard_baseline": float(baseline_keep.best_model_score),
            "guard_curve": list(guard.history),
            "source_seconds": source_seconds,
            "transfer_seconds": model_seconds,
            "target_only_seconds": baseline_seconds,
            "n_test_users": len(dm.index.users_with(b, "test")),
            "n_shared": dm.overlap.overlap_users,
        }
