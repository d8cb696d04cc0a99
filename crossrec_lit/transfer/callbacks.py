"""Transfer callbacks: they drive what the models define, following Lightning's callback rule.

* :class:`LoadSourceWeights` - the seed's "parameter sharing": copy a source model's weights into
  a target model by name, with shape checks and a report of what moved.
* :class:`FreezeUnfreeze` - the seed's "fine-tuning": keep transferred modules frozen, then
  release them at a given epoch (a :class:`~pytorch_lightning.callbacks.BaseFinetuning`).
* :class:`SourceWeightSchedule` - lambda of the joint objective over epochs.
* :class:`L2SP` - pull fine-tuned weights toward their starting (source) values.
* :class:`NegativeTransferGuard` - compare with the target-only baseline and warn or stop.
* :class:`PhaseSchedule` - SOURCE -> TARGET -> OVERLAP phases of multi-phase models.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BaseFinetuning, Callback
from pytorch_lightning.utilities import rank_zero_warn

from crossrec_lit.errors import CrossRecError

log = logging.getLogger(__name__)


def _modules(pl_module: pl.LightningModule, names: Sequence[str]) -> list[torch.nn.Module]:
    out = []
    for name in names:
        module = pl_module.get_submodule(name) if name else pl_module
        out.append(module)
    return out


def _check_names(pl_module: pl.LightningModule, names: Sequence[str], what: str) -> None:
    known = {n for n, _ in pl_module.named_modules() if n}
    missing = [n for n in names if n not in known]
    if missing:
        raise CrossRecError(
            f"{what}: {type(pl_module).__name__} has no module(s) {missing}",
            f"use names from {sorted(n for n in known if '.' not in n)}",
        )


class LoadSourceWeights(Callback):
    """Copy parameters and buffers from a source checkpoint into the model before training.

    Args:
        checkpoint: a Lightning checkpoint (``.ckpt``) or a saved ``state_dict`` (``.pt``).
        mapping: source name prefix -> target name prefix, e.g. ``{"user_emb": "source_user_emb"}``
            copies ``user_emb.weight`` into ``source_user_emb.weight``. Without a mapping,
            names are matched as they are.
        required: target name prefixes that must receive weights (default: every mapped
            target prefix); a missing or mis-shaped one is an error, not a silent skip.

    After loading, :attr:`report` lists ``transferred``, ``shape_mismatch`` (name, source shape,
    target shape), ``not_in_source`` and ``unused_source`` names.
    """

    def __init__(self, checkpoint: str, mapping: dict[str, str] | None = None, required: Sequence[str] | None = None):
        self.checkpoint = str(checkpoint)
        self.mapping = dict(mapping or {})
        self.required = list(required) if required is not None else list(self.mapping.values())
        self.report: dict[str, list] = {}

    def setup(self, trainer, pl_module, stage):
        if stage != "fit":
            return
        path = Path(self.checkpoint)
        if not path.exists():
            raise CrossRecError(f"source checkpoint {path} does not exist", "train the source model first or fix the path")
        try:
            blob = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # torch raises several types for a damaged file
            raise CrossRecError(f"source checkpoint {path} is unreadable ({type(exc).__name__})", "re-create it by training the source model again") from None
        state = blob.get("state_dict", blob) if isinstance(blob, dict) else None
        if not isinstance(state, dict):
            raise CrossRecError(f"{path} holds no state_dict", "pass a Lightning .ckpt or a saved state_dict")
        self.report = self.load(pl_module, state)
        moved = len(self.report["transferred"])
        log.info("LoadSourceWeights: %d tensors transferred from %s; skipped %s", moved, path.name, {k: len(v) for k, v in self.report.items() if k != "transferred"})

    def load(self, pl_module: torch.nn.Module, state: dict) -> dict[str, list]:
        target_state = pl_module.state_dict()
        report = {"transferred": [], "shape_mismatch": [], "not_in_source": [], "unused_source": []}
        used = set()
        renamed = {}
        for name, tensor in state.items():
            new = name
            for src, dst in self.mapping.items():
                if name == src or name.startswith(src + "."):
                    new = dst + name[len(src) :]
                    break
            else:
                if self.mapping:
                    continue  # with a mapping, only mapped names move
            renamed[new] = (name, tensor)
        with torch.no_grad():
            for new, (old, tensor) in renamed.items():
                if new not in target_state:
                    continue
                used.add(old)
                if target_state[new].shape != tensor.shape:
                    report["shape_mismatch"].append((new, tuple(tensor.shape), tuple(target_state[new].shape)))
                    continue
                target_state[new].copy_(tensor.to(target_state[new].dtype))
                report["transferred"].append(new)
        wanted = [n for n in target_state if any(n == p or n.startswith(p + ".") for p in self.mapping.values())] if self.mapping else list(target_state)
        report["not_in_source"] = [n for n in wanted if n not in report["transferred"] and n not in {m[0] for m in report["shape_mismatch"]}]
        report["unused_source"] = [n for n in state if n not in used]
        bad = [r for r in self.required if not any(t == r or t.startswith(r + ".") for t in report["transferred"])]
        if report["shape_mismatch"] or (bad and report["transferred"]):
            raise CrossRecError(
                f"source weights did not fit: required {bad} not transferred; shape mismatches {report['shape_mismatch'][:3]}",
                "train the source model with the same embedding size and on the same CrossDomainDataModule (same user/item indices)",
            )
        if not report["transferred"]:
            raise CrossRecError(
                f"no weight of {Path(self.checkpoint).name} matches {type(pl_module).__name__} "
                f"(source names e.g. {list(state)[:3]}, target names e.g. {list(target_state)[:3]})",
                "check that the checkpoint comes from the intended source model, or give a mapping of name prefixes",
            )
        return report


class FreezeUnfreeze(BaseFinetuning):
    """Freeze named modules before training; unfreeze them at ``unfreeze_at_epoch`` (None: never).

    Unfrozen parameters join the optimiser as a new group with ``lr * lr_factor``: transferred
    weights usually want a smaller step than freshly initialised ones.
    """

    def __init__(self, modules: Sequence[str], unfreeze_at_epoch: int | None = None, lr_factor: float = 0.1):
        super().__init__()
        if isinstance(modules, str):
            modules = [modules]
        if not modules:
            raise CrossRecError("FreezeUnfreeze needs at least one module name", "name the transferred modules, e.g. ['user_emb']")
        self.module_names = list(modules)
        self.unfreeze_at_epoch = unfreeze_at_epoch
        self.lr_factor = float(lr_factor)

    def freeze_before_training(self, pl_module):
        _check_names(pl_module, self.module_names, "FreezeUnfreeze")
        self.freeze(_modules(pl_module, self.module_names), train_bn=False)

    def finetune_function(self, pl_module, current_epoch, optimizer):
        if self.unfreeze_at_epoch is not None and current_epoch == self.unfreeze_at_epoch:
            lr = optimizer.param_groups[0]["lr"] * self.lr_factor
            self.unfreeze_and_add_param_group(_modules(pl_module, self.module_names), optimizer, lr=lr, train_bn=False)


class SourceWeightSchedule(Callback):
    """Set lambda (``pl_module.source_weight``) at the start of every epoch.

    ``kind``: ``constant`` (``start`` throughout), ``linear`` (``start`` -> ``end`` over
    ``epochs``, then ``end``), ``step`` (multiply by ``gamma`` every ``step_every`` epochs).
    """

    def __init__(self, kind: str = "linear", start: float = 1.0, end: float = 0.0, epochs: int = 10, step_every: int = 5, gamma: float = 0.5):
        if kind not in ("constant", "linear", "step"):
            raise CrossRecError(f"unknown schedule kind {kind!r}", "use constant, linear or step")
        if epochs < 1 or step_every < 1:
            raise CrossRecError("epochs and step_every must be >= 1", "use positive epoch counts")
        self.kind, self.start, self.end, self.epochs, self.step_every, self.gamma = kind, start, end, epochs, step_every, gamma

    def value(self, epoch: int) -> float:
        if self.kind == "constant":
            return self.start
        if self.kind == "linear":
            t = min(epoch / self.epochs, 1.0)
            return self.start + (self.end - self.start) * t
        return self.start * self.gamma ** (epoch // self.step_every)

    def on_train_epoch_start(self, trainer, pl_module):
        if not hasattr(pl_module, "source_weight"):
            raise CrossRecError(f"{type(pl_module).__name__} has no source_weight", "use SourceWeightSchedule with a cross-domain model")
        pl_module.source_weight = float(self.value(trainer.current_epoch))

    def on_train_epoch_end(self, trainer, pl_module):
        pl_module.log("train/source_weight", pl_module.source_weight, on_epoch=True)


class L2SP(Callback):
    """L2-SP (Li et al., ICML 2018): penalise ``alpha/2 * ||w - w0||^2`` for the named modules,
    where ``w0`` are the weights when training starts (after the source weights were loaded).

    Implemented as the penalty's gradient ``alpha * (w - w0)`` added after backward, which is
    exactly the gradient of the penalised loss and needs no change to the model's loss.
    """

    def __init__(self, alpha: float = 0.01, modules: Sequence[str] = ()):
        if alpha < 0:
            raise CrossRecError(f"alpha must be >= 0, got {alpha}", "use a small positive value such as 0.01")
        self.alpha = float(alpha)
        self.module_names = [modules] if isinstance(modules, str) else list(modules)
        self.reference: dict[str, torch.Tensor] = {}

    def _params(self, pl_module):
        names = self.module_names or [""]
        if self.module_names:
            _check_names(pl_module, names, "L2SP")
        for prefix in names:
            module = pl_module.get_submodule(prefix) if prefix else pl_module
            for name, p in module.named_parameters():
                yield (f"{prefix}.{name}" if prefix else name), p

    def on_fit_start(self, trainer, pl_module):
        self.reference = {name: p.detach().clone() for name, p in self._params(pl_module)}

    def penalty(self, pl_module) -> torch.Tensor:
        return 0.5 * self.alpha * sum(((p - self.reference[n]) ** 2).sum() for n, p in self._params(pl_module))

    def on_after_backward(self, trainer, pl_module):
        with torch.no_grad():
            for name, p in self._params(pl_module):
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise CrossRecError("L2SP cannot add to sparse gradients", "train with a dense optimizer (adam) when using L2SP")
                p.grad.add_(p - self.reference[name], alpha=self.alpha)


class NegativeTransferGuard(Callback):
    """Watch for negative transfer: the transfer model doing worse than the target-only baseline.

    After each validation, compares ``monitor`` with ``baseline`` (the target-only model's
    validation score, which the experiment runner fills in from that model's run). When the
    model has been worse by more than ``tolerance`` for ``patience`` consecutive validations
    (after ``min_epochs``), it warns, logs ``guard/negative_transfer = 1`` and, with
    ``action="stop"``, stops training.
    """

    def __init__(self, baseline: float, monitor: str = "val/ndcg@10", mode: str = "max", tolerance: float = 0.0, patience: int = 2, min_epochs: int = 0, action: str = "warn"):
        if action not in ("warn", "stop"):
            raise CrossRecError(f"unknown action {action!r}", "use 'warn' or 'stop'")
        if mode not in ("max", "min"):
            raise CrossRecError(f"unknown mode {mode!r}", "use 'max' or 'min'")
        if baseline is None or not math.isfinite(float(baseline)):
            raise CrossRecError(f"baseline must be a finite number, got {baseline!r}", "pass the target-only model's validation score")
        self.baseline = float(baseline)
        self.monitor, self.mode, self.tolerance = monitor, mode, float(tolerance)
        self.patience, self.min_epochs, self.action = int(patience), int(min_epochs), action
        self.strikes = 0
        self.triggered = False
        self.history: list[tuple[int, float]] = []

    def on_validation_end(self, trainer, pl_module):
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics[self.monitor])
        self.history.append((trainer.current_epoch, value))
        worse = value < self.baseline - self.tolerance if self.mode == "max" else value > self.baseline + self.tolerance
        self.strikes = self.strikes + 1 if (worse and trainer.current_epoch >= self.min_epochs) else 0
        if self.strikes >= self.patience and not self.triggered:
            self.triggered = True
            rank_zero_warn(
                f"negative transfer: {self.monitor}={value:.4f} is below the target-only baseline {self.baseline:.4f} "
                f"for {self.strikes} validations; the source store is hurting this model"
            )
            if self.action == "stop":
                trainer.should_stop = True

    def on_train_epoch_end(self, trainer, pl_module):
        pl_module.log("guard/negative_transfer", float(self.triggered), on_epoch=True)

    def state_dict(self):
        return {"strikes": self.strikes, "triggered": self.triggered, "history": self.history}

    def load_state_dict(self, state_dict):
        self.strikes, self.triggered, self.history = state_dict["strikes"], state_dict["triggered"], list(state_dict["history"])


class PhaseSchedule(Callback):
    """Switch the DataModule's phase (``source``/``target``/``both``/``overlap``) by epoch.

    ``schedule`` maps a starting epoch to a phase, e.g. ``{0: "target", 20: "overlap"}`` for
    EMCDR on a pretrained source model. The model's ``phase`` attribute follows, for models
    that need to know. Needs ``Trainer(reload_dataloaders_every_n_epochs=1)`` so each epoch's
    loader is built for its phase.
    """

    def __init__(self, schedule: dict[int, str]):
        if not schedule:
            raise CrossRecError("PhaseSchedule needs at least one phase", "e.g. {0: 'target', 20: 'overlap'}")
        self.schedule = {int(k): v for k, v in schedule.items()}
        if 0 not in self.schedule:
            raise CrossRecError("PhaseSchedule must say the phase of epoch 0", "add an entry for epoch 0")

    def phase_at(self, epoch: int) -> str:
        return self.schedule[max(e for e in self.schedule if e <= epoch)]

    def _apply(self, trainer, pl_module, epoch: int) -> None:
        dm = trainer.datamodule
        if dm is None or not hasattr(dm, "set_phase"):
            raise CrossRecError("PhaseSchedule needs a CrossDomainDataModule", "train with crossrec_lit.data.CrossDomainDataModule")
        phase = self.phase_at(epoch)
        dm.set_phase(phase)
        pl_module.phase = phase

    def setup(self, trainer, pl_module, stage):
        if stage == "fit" and trainer.reload_dataloaders_every_n_epochs != 1:
            raise CrossRecError("PhaseSchedule needs the training loader rebuilt every epoch", "set Trainer(reload_dataloaders_every_n_epochs=1)")
        if stage == "fit":
            self._apply(trainer, pl_module, 0)

    def on_fit_start(self, trainer, pl_module):
        # on resume, the first epoch to run is not 0
        self._apply(trainer, pl_module, trainer.current_epoch)

    def on_train_epoch_end(self, trainer, pl_module):
        self._apply(trainer, pl_module, trainer.current_epoch + 1)
