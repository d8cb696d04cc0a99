"""Hyperparameter search for the experiment runner, on Optuna.

A model of an experiment config is tuned on the validation split of its tuning seed by one Optuna
study: ``search:`` maps an argument to a distribution and ``trials:`` is the budget; an existing
``grid:`` is the same study with Optuna's :class:`~optuna.samplers.GridSampler` (one trial per grid
point). Where an argument goes is written in its name::

    search:
      lr: {low: 1.0e-4, high: 1.0e-2, log: true}     # a float (init_args of the model)
      embedding_dim: [32, 64, 128]                   # a categorical
      data.num_negatives: {low: 1, high: 8}          # an int, of the DataModule
      trainer.max_epochs: {low: 10, high: 60, step: 10}

Studies live in an Optuna RDB storage: by default a SQLite file ``<out>/studies.db`` (nothing to
start); any SQLAlchemy URL (``--storage postgresql://...``) lets several runner processes, on
several machines, share a study and split its trials. That is Optuna's own distributed mode: each
process samples its next trial from what the storage holds, a heartbeat marks the trials of a
process that died as failed, and :class:`~optuna.storages.RetryHeartbeatStaleTrialCallback` queues them
again. Only the budget needs a rule of ours (:func:`run_study`): a trial whose number comes after
``trials`` live ones is surplus and ends as failed without training, so the processes together
run the budget once.

Pruning: :class:`PruneOnValidation` reports the monitored validation metric to the trial after
each validation and stops hopeless trials (Optuna's median rule by default). We write that small
callback instead of using optuna-integration's ``PyTorchLightningPruningCallback``: the latter
imports ``lightning.pytorch`` and refuses Trainers of the ``pytorch_lightning`` namespace this
package is built on ("Expected a parent").
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import optuna
import pytorch_lightning as pl
from optuna.trial import TrialState

from crossrec_lit.errors import CrossRecError

__all__ = ["PruneOnValidation", "SearchSpace", "open_storage", "run_study", "study_name"]

SECTIONS = ("data", "trainer")  # prefixes of arguments that are not the model's
GRID_POINT = "grid_point"  # the parameter name of a list-form grid (points are not cartesian)
LIVE = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)


class SurplusTrial(Exception):
    """A trial sampled after the budget was already taken by other trials (several processes)."""


# ---------------------------------------------------------------------------------------------
# the search space
# ---------------------------------------------------------------------------------------------
class SearchSpace:
    """The arguments a model's study varies, parsed from a config's ``search:`` or ``grid:``.

    ``suggest(trial)`` returns the hyperparameters of one trial as the runner takes them: a flat
    mapping whose ``data.``/``trainer.`` keys go to the DataModule and the Trainer, the others to
    the model.
    """

    def __init__(self, model: str, search: dict | None = None, grid: dict | list | None = None):
        self.model = model
        self.search = {}
        self.raw = {"search": search or {}, "grid": grid or None}  # what names the study
        self.grid_points: list[dict] | None = None
        if search and grid:
            raise CrossRecError(f"model {model!r} has both search: and grid:", "keep one: grid: for a fixed set of points, search: for a budgeted search")
        if grid:
            self.grid_points = _grid_points(model, grid)
        for arg, dist in (search or {}).items():
            self.search[arg] = _distribution(model, arg, dist)

    @property
    def is_grid(self) -> bool:
        return self.grid_points is not None

    def __bool__(self) -> bool:
        return bool(self.search) or (self.grid_points is not None and len(self.grid_points) > 1)

    def sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        if self.is_grid:
            return TrialSeededGrid({GRID_POINT: list(range(len(self.grid_points)))}, seed=seed)
        # multivariate TPE models the arguments jointly (lr and epochs interact); constant_liar
        # keeps processes sharing a study from sampling the same point while both are running
        return TrialSeededTPE(seed=seed, multivariate=True, constant_liar=True, n_startup_trials=min(10, max(3, len(self.search) * 2)))

    def budget(self, trials: int) -> int:
        return len(self.grid_points) if self.is_grid else int(trials)

    def suggest(self, trial: optuna.Trial) -> dict:
        if self.is_grid:
            return dict(self.grid_points[trial.suggest_categorical(GRID_POINT, list(range(len(self.grid_points))))])
        return {arg: dist(trial, arg) for arg, dist in self.search.items()}

    def hp_of(self, frozen: optuna.trial.FrozenTrial) -> dict:
        """The hyperparameters a finished trial trained with."""
        if self.is_grid:
            return dict(self.grid_points[int(frozen.params[GRID_POINT])])
        return {arg: frozen.params[arg] for arg in self.search}

    def order(self, frozen: optuna.trial.FrozenTrial) -> int:
        """Tie rule among equal validation scores: grid order for grids, trial order otherwise."""
        return int(frozen.params[GRID_POINT]) if self.is_grid else frozen.number


class _TrialSeeded:
    """A sampler whose random draws are seeded by (seed, trial number), not one stream per process.

    A seeded sampler is one random stream per process: two processes sharing a study would draw
    the same first points and train them twice. Seeding each trial by its number (unique in the
    storage) gives one process the same trials on every run and several processes different ones.
    Optuna offers only ``reseed_rng()`` (a random reseed), so this sets the streams its samplers keep.
    """

    def __init__(self, *args, seed: int, **kwargs):
        super().__init__(*args, seed=seed, **kwargs)
        self._base_seed = int(seed)

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        trial_seed = (self._base_seed * 1_000_003 + trial.number) % 2**32
        self._rng.rng.seed(trial_seed)
        if hasattr(self, "_random_sampler"):  # TPE's draws before it has enough trials
            self._random_sampler._rng.rng.seed(trial_seed)
        super().before_trial(study, trial)


class TrialSeededTPE(_TrialSeeded, optuna.samplers.TPESampler):
    pass


class TrialSeededGrid(_TrialSeeded, optuna.samplers.GridSampler):
    pass


def split_hp(hp: dict) -> tuple[dict, dict, dict]:
    """(model arguments, DataModule arguments, Trainer arguments) of a flat hyperparameter dict."""
    parts = {"": {}, "data": {}, "trainer": {}}
    for key, value in hp.items():
        head, dot, rest = key.partition(".")
        if dot and head in SECTIONS:
            parts[head][rest] = value
        else:
            parts[""][key] = value
    return parts[""], parts["data"], parts["trainer"]


def _grid_points(model: str, grid) -> list[dict]:
    import itertools

    if isinstance(grid, list):
        if not grid or not all(isinstance(point, dict) for point in grid):
            raise CrossRecError(f"model {model!r}: a grid list must hold mappings", "write grid: [{arg: value}, ...] or {arg: [values]}")
        return [dict(point) for point in grid]
    if not isinstance(grid, dict):
        raise CrossRecError(f"model {model!r}: grid must be a mapping or a list", "write grid: {arg: [values]} or grid: [{arg: value}, ...]")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise CrossRecError(f"model {model!r}: grid {key!r} must be a non-empty list, got {values!r}", f"write {key}: [value1, value2]")
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def _number(model: str, arg: str, name: str, value):
    # YAML reads 1e-4 (no dot) as a string
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise CrossRecError(f"model {model!r}: search {arg!r}: {name}={value!r} is not a number", f"write e.g. {name}: 1.0e-4") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise CrossRecError(f"model {model!r}: search {arg!r}: {name}={value!r} is not a finite number", f"write e.g. {name}: 0.001")
    return value


def _distribution(model: str, arg: str, dist) -> Callable[[optuna.Trial, str], object]:
    if isinstance(arg, str) and "." in arg and arg.split(".", 1)[0] not in SECTIONS:
        raise CrossRecError(f"model {model!r}: search argument {arg!r} has an unknown prefix", f"prefix with one of {list(SECTIONS)} or none (a model argument)")
    if isinstance(dist, list):
        if not dist:
            raise CrossRecError(f"model {model!r}: search {arg!r} is an empty list", "list at least two choices, or fix the value in init_args")
        bad = [v for v in dist if not (v is None or isinstance(v, (bool, int, float, str)))]
        if bad:
            raise CrossRecError(
                f"model {model!r}: search {arg!r}: choices must be numbers, strings, booleans or null, got {bad[0]!r}",
                "name composite choices with a string the model understands, or use a list-form grid: [{...}, {...}]",
            )
        return lambda trial, name, choices=list(dist): trial.suggest_categorical(name, choices)
    if not isinstance(dist, dict) or not {"low", "high"} <= set(dist):
        raise CrossRecError(f"model {model!r}: search {arg!r} must be a list of choices or {{low, high}}, got {dist!r}", "write e.g. {low: 1.0e-4, high: 1.0e-2, log: true} or [32, 64, 128]")
    unknown = sorted(set(dist) - {"low", "high", "log", "step", "type"})
    if unknown:
        raise CrossRecError(f"model {model!r}: search {arg!r} has unknown key(s) {unknown}", "use low, high, log, step and type (int or float)")
    low, high = _number(model, arg, "low", dist["low"]), _number(model, arg, "high", dist["high"])
    log_scale = bool(dist.get("log", False))
    if not low < high:
        raise CrossRecError(f"model {model!r}: search {arg!r}: low={low} must be below high={high}", "swap them, or fix the value in init_args")
    if log_scale and low <= 0:
        raise CrossRecError(f"model {model!r}: search {arg!r}: a log scale needs low > 0, got {low}", "use a positive low, or log: false")
    kind = dist.get("type") or ("int" if isinstance(low, int) and isinstance(high, int) else "float")
    if kind not in ("int", "float"):
        raise CrossRecError(f"model {model!r}: search {arg!r}: type must be int or float, got {kind!r}", "write type: int or type: float")
    step = dist.get("step")
    if step is not None:
        step = _number(model, arg, "step", step)
        if log_scale:
            raise CrossRecError(f"model {model!r}: search {arg!r}: step and log cannot be combined", "drop one of them")
    if kind == "int":
        return lambda trial, name: trial.suggest_int(name, int(low), int(high), step=int(step or 1), log=log_scale)
    return lambda trial, name: trial.suggest_float(name, float(low), float(high), step=step, log=log_scale)


# ---------------------------------------------------------------------------------------------
# storage and studies
# ---------------------------------------------------------------------------------------------
def default_storage(out: Path) -> str:
    return f"sqlite:///{(Path(out) / 'studies.db').resolve()}"


def open_storage(url: str, heartbeat: int | None = 60) -> optuna.storages.BaseStorage:
    """An RDB storage with heartbeats, so the trials of a process that died are failed and retried."""
    engine_kwargs = {}
    if url.startswith("sqlite"):
        # worker processes write one SQLite file; wait for the lock rather than fail
        engine_kwargs = {"connect_args": {"timeout": 120}}
    attempts = 3
    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():
                # heartbeats are "experimental" in Optuna 5 and say so on every storage
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=heartbeat,
                    grace_period=None if heartbeat is None else 2 * heartbeat,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2) if heartbeat else None,
                )
        except Exception as exc:  # SQLAlchemy raises many kinds: bad URL, missing driver, refused connection
            # processes that start together on an empty database race to create Optuna's schema
            # (PostgreSQL: duplicate key on CREATE TYPE); the loser finds it made on a second try
            if attempt + 1 < attempts and type(exc).__name__ in ("IntegrityError", "ProgrammingError", "OperationalError"):
                time.sleep(1.0 + attempt)
                continue
            raise CrossRecError(f"cannot open the study storage {url!r}: {type(exc).__name__}: {exc}", "pass an SQLAlchemy URL that this machine reaches, e.g. sqlite:///runs/x/studies.db or postgresql://user@host/db") from None


def study_name(experiment: str, model: str, seed: int, identity: dict) -> str:
    """One study per (experiment, model, tuning seed) and everything that changes a trial's result:
    a change of data, arguments, trainer or code starts a new study, a larger budget continues it."""
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return f"{experiment}|{model}|seed{seed}|{digest}"


def sampler_seed(model: str, seed: int) -> int:
    return int(hashlib.sha256(f"{model}|{seed}".encode()).hexdigest()[:8], 16)


def run_study(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    budget: int,
    *,
    poll_seconds: float = 1.0,
    on_trial: Callable[[optuna.trial.FrozenTrial], None] | None = None,
) -> list[optuna.trial.FrozenTrial]:
    """Run trials of ``study`` until ``budget`` of them are complete or pruned, together with any
    other process working on the same study; wait for theirs; return the finished trials.

    A trial counts against the budget while it is live (complete, pruned, running or queued);
    trials that failed (an error, or a process that died: its heartbeat stops and the storage fails
    it, then queues a retry) do not.
    """

    def guarded(trial: optuna.Trial) -> float:
        earlier = study.get_trials(deepcopy=False, states=LIVE)
        if sum(t.number < trial.number for t in earlier) >= budget:
            trial.set_user_attr("surplus", True)  # failed on purpose: nothing trained
            raise SurplusTrial(f"trial {trial.number} is past the budget of {budget}")
        return objective(trial)

    def stop_at_budget(st: optuna.Study, frozen: optuna.trial.FrozenTrial) -> None:
        if on_trial is not None and frozen.state != TrialState.FAIL:
            on_trial(frozen)
        # stop once the budget is taken, by this process or another (whose trials may still run)
        if len(st.get_trials(deepcopy=False, states=LIVE)) >= budget:
            st.stop()

    while True:
        finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
        live = study.get_trials(deepcopy=False, states=LIVE)
        waiting = [t for t in live if t.state == TrialState.WAITING]
        if waiting or len(live) < budget:
            study.optimize(guarded, catch=(SurplusTrial,), callbacks=[stop_at_budget])
            continue
        if len(finished) >= budget and len(finished) == len(live):
            # a study run before with a larger budget: its first `budget` trials are exactly what a
            # fresh run with this budget draws (the sampler is seeded per trial number), so the
            # choice is made among those, not among trials this budget would never have run
            return sorted(finished, key=lambda t: t.number)[:budget]
        # other processes still run trials of this study: wait for them; a dead one's trial is
        # failed here once its heartbeat is stale, and its retry queued for whoever comes next
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # as in open_storage
            optuna.storages.fail_stale_trials(study)
        time.sleep(poll_seconds)


def best_trial(space: SearchSpace, trials: list[optuna.trial.FrozenTrial], mode: str) -> optuna.trial.FrozenTrial:
    """The complete trial with the best validation score; the first in grid/trial order among equals."""
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        raise CrossRecError(f"every trial of model {space.model!r} was pruned or failed", "raise the budget (trials:), or relax the pruner (pruner: {n_startup_trials: ...} or pruner: null)")
    sign = -1.0 if mode == "max" else 1.0
    return min(complete, key=lambda t: (sign * t.value, space.order(t)))


def choosable_trials(space: SearchSpace, trials: list[optuna.trial.FrozenTrial], mode: str) -> set[int]:
    """Numbers of the trials that :func:`best_trial` picks for some budget: a run with budget b
    chooses among the study's first b trials (see :func:`run_study`), so these are the best of every
    prefix of the trials in number order. Every other complete trial can never be a study's choice."""
    ordered = sorted(trials, key=lambda t: t.number)
    # the best of a prefix can change only where the prefix gains a complete trial
    return {best_trial(space, ordered[:end], mode).number for end, t in enumerate(ordered, 1) if t.state == TrialState.COMPLETE}


# ---------------------------------------------------------------------------------------------
# pruning inside a Lightning fit
# ---------------------------------------------------------------------------------------------
class PruneOnValidation(pl.Callback):
    """Report the monitored validation metric to an Optuna trial and stop the fit when the study's
    pruner says the trial is hopeless (raises :class:`optuna.TrialPruned` out of ``fit``).

    Validations before ``trainer.min_epochs`` are not reported: models such as EMCDR score the
    evaluated users only once a later phase trains, so their early curve says nothing.
    ``curve`` keeps the reported (epoch, value) pairs, so a cached trial can be replayed.
    """

    def __init__(self, trial: optuna.Trial, monitor: str):
        self.trial = trial
        self.monitor = monitor
        self.curve: list[tuple[int, float]] = []
        self.pruned_at: int | None = None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        epoch = int(trainer.current_epoch)
        if trainer.min_epochs and epoch + 1 < trainer.min_epochs:
            return
        value = float(trainer.callback_metrics[self.monitor])
        self.curve.append((epoch, value))
        self.trial.report(value, step=epoch)
        if self.trial.should_prune():
            self.pruned_at = epoch
            raise optuna.TrialPruned(f"{self.monitor}={value:.5f} at epoch {epoch}")


def replay(trial: optuna.Trial, curve: list, pruned: bool) -> bool:
    """Report a cached trial's curve to ``trial`` as its fit would; raises TrialPruned where the
    pruner stops it. A cached *pruned* trial that the pruner now lets through must be trained:
    returns False for that case, True when the cached record stands."""
    for epoch, value in curve:
        trial.report(float(value), step=int(epoch))
        if trial.should_prune():
            raise optuna.TrialPruned(f"replayed: {value:.5f} at epoch {epoch}")
    return not pruned


def quiet_optuna() -> None:
    """Optuna logs a line per trial at INFO; the runner prints its own progress."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
