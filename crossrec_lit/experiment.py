"""Run one config for several models and seeds: tune on validation, test once, tabulate.

    python -m crossrec_lit.experiment --config configs/toys_mf.yaml --seeds 3 --out runs/toys

writes ``<out>/results.csv`` (model, protocol, split, metric, k, seed, value, params),
``<out>/per_user.csv.gz`` (every test user's metric values, for paired tests),
``<out>/summary.md`` (a data diagnosis, then mean +/- std over seeds with Holm-corrected paired
tests against the baselines), ``<out>/studies.db`` (the models' Optuna studies) and Lightning CSV
logs under ``<out>/logs``.

A model with ``search:`` (or a ``grid:`` of several points) is tuned by an Optuna study on the
validation split (:mod:`crossrec_lit.search`): every trial keeps its best epoch by validation
(``monitor``), hopeless trials are pruned, and the best trial is then evaluated on the test split,
which nothing else ever looks at. With ``tune: first_seed`` (the default) the study runs on the
first seed only and its choice is reused for the others.

Trials are cached under ``<out>/trials`` by a key of (model config, data fingerprint, seed,
trainer settings, code version): re-running an unchanged experiment reuses every result. Each row of
``results.csv`` names the trial folder it came from (``trial``); :func:`chosen_trial` and
:func:`load_trained` read the record and the kept model back. A searched trial keeps its weights
(``best.ckpt``) only where some budget would choose it (the best of the study's first b trials, for
some b): a study of 30 trials keeps a handful instead of 30, and the others keep their record and
validation curve, which is all a re-run replays (``keep_checkpoints="all"`` keeps every one).

With ``workers > 1`` (``--workers``, or ``CROSSREC_WORKERS``) the trials that do not depend on one
another train in that many worker processes (see :mod:`crossrec_lit.trial_pool`); the results are
the same as with one process, because every trial seeds itself and the data splits are seeded.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import logging
import os
import re
import sys
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd
import pytorch_lightning as pl
import torch
from optuna import TrialPruned
from pytorch_lightning.utilities.exceptions import SIGTERMException

from crossrec_lit.atomic import atomic_write, atomic_write_text
from crossrec_lit.code_version import code_version
from crossrec_lit.config import check_arguments, deep_merge, import_class, instantiate, load_yaml, placeholders, substitute
from crossrec_lit.errors import CrossRecError
from crossrec_lit.runtime import filter_known_warnings, quiet_lightning_logs, set_num_threads, threads_from_env
from crossrec_lit.search import (
    PruneOnValidation,
    SearchSpace,
    best_trial,
    choosable_trials,
    default_storage,
    open_storage,
    quiet_optuna,
    replay,
    run_study,
    sampler_seed,
    split_hp,
    study_name,
)
from crossrec_lit.training import best_checkpoint, quiet_trainer

EXPERIMENT_KEYS = {
    "name", "protocol", "data", "trainer", "monitor", "mode", "early_stopping", "models", "seeds",
    "tune", "num_threads", "baselines", "summary_metrics", "smoke", "description", "pretrain",
    "trials", "pruner",
}
MODEL_KEYS = {"name", "class_path", "init_args", "trainer", "grid", "search", "trials", "data", "callbacks", "protocol", "monitor", "mode"}
DEFAULT_PRUNER = {"n_startup_trials": 5, "n_warmup_steps": 0}
log = logging.getLogger("crossrec_lit.experiment")


@dataclass
class ModelSpec:
    """One model of an experiment: its class, fixed arguments, grid and per-model overrides."""

    name: str
    class_path: str
    init_args: dict = field(default_factory=dict)
    trainer: dict = field(default_factory=dict)
    grid: dict | list = field(default_factory=dict)  # {arg: [values]} (all combinations) or [{arg: value}, ...]
    search: dict = field(default_factory=dict)  # {arg: {low, high, log} or [choices]}: an Optuna search
    trials: int | None = None  # the search's budget (default: the experiment's trials)
    data: dict = field(default_factory=dict)
    callbacks: list = field(default_factory=list)
    protocol: str | None = None  # overrides the experiment's protocol (one table, several protocols)
    # override the experiment's choice metric, e.g. a BPR source model of a rating experiment,
    # whose validation has no ratings, is chosen on val/ndcg@10 while the rating models use val/rmse
    monitor: str | None = None
    mode: str | None = None

    def space(self) -> SearchSpace:
        """What the model's study varies (empty: one fixed point, nothing to tune)."""
        return SearchSpace(self.name, self.search, self.grid)

    def grid_points(self) -> list[dict]:
        space = self.space()
        return space.grid_points if space.is_grid else [{}]


@dataclass
class Experiment:
    name: str
    data: dict
    models: list[ModelSpec]
    protocol: str = "P1-warm"
    trainer: dict = field(default_factory=dict)
    monitor: str = "val/ndcg@10"
    mode: str = "max"
    early_stopping: dict | None = None
    seeds: list[int] = field(default_factory=lambda: [0])
    tune: str = "first_seed"
    num_threads: int | None = None
    baselines: list[str] = field(default_factory=list)
    summary_metrics: list[str] = field(default_factory=lambda: ["ndcg@10", "recall@10"])
    pretrain: dict[str, ModelSpec] = field(default_factory=dict)
    trials: int = 20  # budget of each model's search (grids: their number of points)
    pruner: dict | None = field(default_factory=lambda: dict(DEFAULT_PRUNER))  # MedianPruner's arguments; null: off


def load_experiment(path: str | os.PathLike, *, smoke: bool = False) -> Experiment:
    """Read and validate an experiment YAML (``smoke`` merges its ``smoke:`` section over it)."""
    raw = load_yaml(path)
    unknown = sorted(set(raw) - EXPERIMENT_KEYS)
    if unknown and "model" in unknown and "models" not in raw:
        # the single-model layout of LightningCLI's configs (configs/mf_synthetic.yaml)
        raise CrossRecError(f"{path} is a `crossrec fit` config (one model:, no models: list)", f"run it with `crossrec fit --config {path}`, or write an experiment: data: plus models: [{{name: ..., class_path: ...}}] (see configs/toys_mf.yaml)")
    if unknown:
        raise CrossRecError(f"{path}: unknown key(s) {unknown}", f"use only {sorted(EXPERIMENT_KEYS)}")
    if smoke:
        raw = _apply_smoke(raw)
    raw.pop("smoke", None)
    raw.pop("description", None)
    for key in ("data", "models"):
        if key not in raw:
            raise CrossRecError(f"{path}: missing required key {key!r}", f"add a {key}: section (see configs/ for examples)")
    data_class = _check_data(raw["data"], path)
    raw.setdefault("protocol", _protocol_of_split((raw["data"].get("init_args") or {}).get("split", _default_split(data_class))))
    if not isinstance(raw["models"], list) or not raw["models"]:
        raise CrossRecError(f"{path}: models must be a non-empty list", "list at least one model with name and class_path")
    specs = [_model_spec(m, f"{path}: model #{i + 1}") for i, m in enumerate(raw["models"])]
    pretrain = raw.get("pretrain") or {}
    if not isinstance(pretrain, dict):
        raise CrossRecError(f"{path}: pretrain must map names to model specs", "write pretrain: {source_mf: {class_path: ..., ...}}")
    raw["pretrain"] = {name: _model_spec({"name": name, **m}, f"{path}: pretrain {name!r}") for name, m in pretrain.items()}
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise CrossRecError(f"{path}: duplicate model names {names}", "give each model a unique name")
    raw["models"] = specs
    raw.setdefault("name", Path(path).stem)
    exp = Experiment(**raw)
    if exp.mode not in ("max", "min"):
        raise CrossRecError(f"{path}: mode must be max or min, got {exp.mode!r}", "use max for ranking metrics, min for errors")
    if exp.tune not in ("first_seed", "each_seed"):
        raise CrossRecError(f"{path}: tune must be first_seed or each_seed, got {exp.tune!r}", "pick one of the two")
    _check_budget(exp.trials, f"{path}: trials")
    for spec in (*specs, *exp.pretrain.values()):
        if spec.mode is not None and spec.mode not in ("max", "min"):
            raise CrossRecError(f"{path}: model {spec.name!r}: mode must be max or min, got {spec.mode!r}", "use max for ranking metrics, min for errors")
        spec.space()  # a bad distribution fails now, not after an hour of training
        if spec.trials is not None:
            _check_budget(spec.trials, f"{path}: model {spec.name!r}: trials")
    if exp.pruner is not None:
        if not isinstance(exp.pruner, dict) or set(exp.pruner) - {"n_startup_trials", "n_warmup_steps", "interval_steps", "n_min_trials"}:
            raise CrossRecError(f"{path}: pruner must map MedianPruner's arguments, got {exp.pruner!r}", "write pruner: {n_startup_trials: 5, n_warmup_steps: 0} or pruner: null (no pruning)")
    clash = sorted(set(exp.pretrain) & set(names))
    if clash:
        raise CrossRecError(f"{path}: names {clash} are used by both pretrain and models", "give pretrain entries their own names")
    missing = [b for b in exp.baselines if b not in names]
    if missing:
        raise CrossRecError(f"{path}: baselines {missing} are not among the models {names}", "name baselines exactly as in models")
    return exp


_PROTOCOLS = {
    "leave_one_out": "P1-warm (leave-one-out)",
    "ratio": "P1-warm (per-customer ratio split)",
    "cold_start": "P2-cold-start customers",
    "new_items": "P3-new items",
    "file": "split read from file",
}


def _protocol_of_split(split: str) -> str:
    """The table label of a config that names no ``protocol:``: what its DataModule's split tests
    (a cold-start run labelled warm would be read as the wrong experiment)."""
    return _PROTOCOLS.get(str(split), f"split {split}")


def _default_split(data_class: type) -> str:
    """The split a DataModule uses when the config names none (read from its signature, so the
    label follows the class rather than a copy of its default). A subclass that passes ``split``
    on through ``**kwargs`` gets its parent's."""
    defaults = (
        inspect.signature(cls).parameters.get("split", inspect.Parameter("split", inspect.Parameter.KEYWORD_ONLY)).default
        for cls in data_class.__mro__
        if "__init__" in vars(cls)
    )
    # InteractionDataModule, always in the MRO (checked by _check_data), defines the default
    return next(d for d in defaults if d is not inspect.Parameter.empty)


def _check_data(data, path) -> type:
    """The experiment's ``data:`` must build one of the package's DataModules: the runner asks it
    for its fingerprint, its splits and the sizes it hands the models."""
    from crossrec_lit.data import InteractionDataModule

    fix = (
        "write data: {class_path: crossrec_lit.data.CrossDomainDataModule (two stores) or "
        "crossrec_lit.data.InteractionDataModule (one), init_args: {source: {class_path: "
        "crossrec_lit.data.InteractionFile, init_args: {path: ...}}, ...}} (see configs/toys_mf.yaml)"
    )
    if not (isinstance(data, dict) and isinstance(data.get("class_path"), str)):
        got = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise CrossRecError(f"{path}: data must name a DataModule under class_path, got {got}", fix)
    cls = import_class(data["class_path"])
    if not (isinstance(cls, type) and issubclass(cls, InteractionDataModule)):
        raise CrossRecError(f"{path}: data's class_path {data['class_path']!r} is not one of the package's DataModules", fix)
    return cls


def with_pair(exp: Experiment, source: str, target: str) -> Experiment:
    """The same experiment on another pair of stores: the DataModule's ``source_domain`` and
    ``target_domain``, and the stores a loader reads (``domains``), become ``source`` -> ``target``.
    One config then serves every directed pair of a data set (``--pair Sports:Beauty``)."""
    import copy

    args = (exp.data or {}).get("init_args") or {}
    if "source_domain" not in args or "target_domain" not in args:
        raise CrossRecError("this experiment's data names no source_domain/target_domain to replace", "use --pair with a CrossDomainDataModule config")
    if source == target:
        raise CrossRecError(f"--pair needs two different stores, got {source}:{target}", "write --pair SOURCE:TARGET, e.g. --pair Sports:Toys")
    out = copy.deepcopy(exp)
    data = out.data["init_args"]
    data["source_domain"], data["target_domain"] = source, target
    loader = (data.get("source") or {}).get("init_args") or {}
    if "domains" in loader:
        loader["domains"] = [source, target]
    out.name = f"{exp.name} [{source} -> {target}]"
    return out


def parse_pair(text: str) -> tuple[str, str]:
    """The two stores of a ``--pair SOURCE:TARGET`` argument."""
    source, sep, target = text.partition(":")
    if not sep or not source or not target:
        raise CrossRecError(f"--pair {text!r} is not SOURCE:TARGET", "write e.g. --pair Sports:Toys")
    return source, target


def with_models(exp: Experiment, names: list[str]) -> Experiment:
    """The experiment with only the models named (in config order); baselines not kept are dropped."""
    import copy

    known = [m.name for m in exp.models]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise CrossRecError(f"--models names unknown model(s) {unknown}", f"use names from the config: {known}")
    out = copy.deepcopy(exp)
    out.models = [m for m in out.models if m.name in names]
    out.baselines = [b for b in out.baselines if b in names]
    return out


def _check_budget(value, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CrossRecError(f"{where} must be a whole number >= 1, got {value!r}", "give the number of trials each search may train, e.g. 30")


def _model_spec(m, where: str) -> ModelSpec:
    if not isinstance(m, dict) or "class_path" not in m:
        raise CrossRecError(f"{where} has no class_path", "give every model a class_path and a name")
    bad = sorted(set(m) - MODEL_KEYS)
    if bad:
        raise CrossRecError(f"{where} ({m.get('name')!r}) has unknown key(s) {bad}", f"use only {sorted(MODEL_KEYS)}")
    import_class(m["class_path"])  # fail now, not after an hour of training
    return ModelSpec(**{"name": m.get("name", m["class_path"].rsplit(".", 1)[-1]), **{k: v for k, v in m.items() if k != "name"}})


def _apply_smoke(raw: dict) -> dict:
    smoke = raw.get("smoke") or {}
    out = deep_merge(raw, {k: v for k, v in smoke.items() if k != "models"})
    overrides = smoke.get("models") or {}
    out["models"] = [deep_merge(m, overrides.get(m.get("name"), {})) for m in raw.get("models", [])]
    if raw.get("pretrain"):
        out["pretrain"] = {n: deep_merge(m, overrides.get(n, {})) for n, m in raw["pretrain"].items()}
    return out


# ---------------------------------------------------------------------- running
# which trials keep their weights (best.ckpt): those some search budget would choose, or every one
KEEP_CHECKPOINTS = ("choosable", "all")


class Runner:
    """Executes an :class:`Experiment`; :func:`run_experiment` is the functional entry point."""

    def __init__(
        self,
        exp: Experiment,
        out: str | os.PathLike,
        *,
        cache: bool = True,
        progress: bool = True,
        storage: str | None = None,
        trials: int | None = None,
        heartbeat: int | None = 60,
        run_tag: str = "",
        keep_checkpoints: str = "choosable",
    ):
        self.exp = exp
        self.out = Path(out).resolve()
        self.cache = cache
        self.progress = progress
        self.storage_url = storage or default_storage(self.out)
        self.trials = trials  # overrides every search's budget (not grids)
        self.heartbeat = heartbeat
        if keep_checkpoints not in KEEP_CHECKPOINTS:
            raise CrossRecError(f"keep_checkpoints must be one of {', '.join(KEEP_CHECKPOINTS)}, got {keep_checkpoints!r}",
                                "use 'choosable' (the default: weights of trials some budget would choose) or 'all'")
        self.keep_checkpoints = keep_checkpoints
        # studies are reused like trials; without the cache a run starts studies of its own
        self.run_tag = run_tag if cache else (run_tag or f"run{time.time_ns()}")
        self._storage = None
        self._datamodules: dict[str, object] = {}
        self._chosen: dict[str, dict] = {}
        self._best: dict[tuple[str, int], dict] = {}  # (model or pretrain name, seed) -> chosen trial
        self._studies: dict[tuple[str, int], dict] = {}  # (model, tuning seed) -> study name, trials, pruned
        self._fresh: set[str] = set()  # keys of trials trained in this run (reused even when cache=False)
        self._codes: dict[str, str] = {}  # spec name -> code_version of what its trials import
        self._first_seed: int | None = None
        self.diagnosis = ""  # markdown, written by run() before training

    def code(self, spec: ModelSpec) -> str:
        """The version of the code a trial of ``spec`` runs: the runner's modules and those its
        model, data and callbacks import (:func:`crossrec_lit.code_version.code_version`)."""
        if spec.name not in self._codes:
            data = deep_merge(self.exp.data, {"init_args": spec.data} if spec.data else {})
            self._codes[spec.name] = code_version(_class_paths([{"class_path": spec.class_path}, spec.init_args, spec.callbacks, data]))
        return self._codes[spec.name]

    def options(self) -> dict:
        """What another process needs to build an equivalent Runner (see trial_pool)."""
        return {"cache": self.cache, "storage": self.storage_url, "trials": self.trials, "heartbeat": self.heartbeat, "run_tag": self.run_tag,
                "keep_checkpoints": self.keep_checkpoints}

    def monitor(self, spec: ModelSpec) -> tuple[str, str]:
        """The metric that chooses, prunes and early-stops ``spec``'s trials, and its direction."""
        return spec.monitor or self.exp.monitor, spec.mode or self.exp.mode

    def spec(self, name: str) -> ModelSpec:
        """The model (or pretrain entry) called ``name``."""
        for spec in (*self.exp.models, *self.exp.pretrain.values()):
            if spec.name == name:
                return spec
        raise CrossRecError(f"no model or pretrain entry named {name!r}", f"use one of {[m.name for m in self.exp.models]}")

    # .................................................................. data
    def datamodule(self, spec: ModelSpec | None, seed: int, overrides: dict | None = None):
        """The set-up DataModule of ``spec`` for ``seed`` (None: the experiment's own data);
        ``overrides`` are searched ``data.`` arguments."""
        changes = deep_merge((spec.data if spec else None) or {}, overrides or {})
        data = deep_merge(self.exp.data, {"init_args": changes} if changes else {})
        data = substitute(data, {"seed": seed})
        # the phase only selects what the training loader serves: models that differ only in it
        # share one loaded and split DataModule (models run one after another)
        phase = (data.get("init_args") or {}).pop("phase", None)
        key = json.dumps(data, sort_keys=True, default=str)
        if key not in self._datamodules:
            dm = instantiate(data)
            dm.setup("fit")
            self._datamodules[key] = dm
        dm = self._datamodules[key]
        if hasattr(dm, "set_phase"):
            dm.set_phase(phase or "target")
        elif phase is not None:
            raise CrossRecError(f"model {spec.name if spec else '(data)'!r} sets a phase but {type(dm).__name__} has none", "use a CrossDomainDataModule for phases")
        return dm

    # .................................................................. references between runs
    def resolve(self, value, seed: int):
        """Fill ``${seed}``, ``${pretrained:NAME}`` (the checkpoint of pretrain NAME for this seed,
        trained on first use and cached) and ``${baseline:NAME}`` (the validation score of model
        NAME's chosen run for this seed; NAME must come earlier in ``models``)."""
        variables = {"seed": seed}
        for name in placeholders(value):
            kind, _, ref = name.partition(":")
            if kind == "pretrained":
                if ref not in self.exp.pretrain:
                    raise CrossRecError(f"${{pretrained:{ref}}} names no pretrain entry", f"define it under pretrain: (have {sorted(self.exp.pretrain)})")
                variables[name] = str((self.out / self.choose(self.exp.pretrain[ref], seed, tune=self._tune_now(seed))["checkpoint"]).resolve())
            elif kind == "baseline":
                if (ref, seed) not in self._best:
                    raise CrossRecError(f"${{baseline:{ref}}} is used before model {ref!r} ran for seed {seed}", f"list {ref!r} before the models that refer to it")
                variables[name] = self._best[(ref, seed)]["best_score"]
        return substitute(value, variables)

    def _tune_now(self, seed: int) -> bool:
        return self.exp.tune == "each_seed" or seed == self._first_seed

    def choose(self, spec: ModelSpec, seed: int, *, tune: bool) -> dict:
        """Search the model's arguments on validation (its study), or train the choice made on the
        first seed, and keep the best trial by validation. The test split is not read here."""
        if (spec.name, seed) in self._best:
            return self._best[(spec.name, seed)]
        space = spec.space()
        if not tune and spec.name in self._chosen:
            best = self.trial(spec, self._chosen[spec.name], seed)
        elif space:
            best = self.search(spec, space, seed)
        else:
            best = self.trial(spec, spec.grid_points()[0], seed)
        self._chosen.setdefault(spec.name, best["hp"])
        self._best[(spec.name, seed)] = best
        return best

    def needs_search(self, spec: ModelSpec, seed: int) -> bool:
        """Whether ``choose`` runs a study for (spec, seed)."""
        return self._tune_now(seed) and bool(spec.space())

    def candidates(self, spec: ModelSpec, seed: int) -> list[dict] | None:
        """The one point ``choose`` trains for (spec, seed) without a study, or None while it
        depends on a study's choice (the tuning seed's, for ``tune: first_seed``)."""
        if self.needs_search(spec, seed):
            return None
        if spec.name in self._chosen:
            return [self._chosen[spec.name]]
        return None if spec.space() else spec.grid_points()

    # .................................................................. the search
    def storage(self):
        if self._storage is None:
            if self.storage_url.startswith("sqlite:///"):
                self.out.mkdir(parents=True, exist_ok=True)
            self._storage = open_storage(self.storage_url, self.heartbeat)
        return self._storage

    def budget(self, spec: ModelSpec) -> int:
        """Trials of the model's study: ``--trials``, else the model's ``trials``, else the
        experiment's; a grid's number of points."""
        return spec.space().budget(self.trials or spec.trials or self.exp.trials)

    def search(self, spec: ModelSpec, space: SearchSpace, seed: int) -> dict:
        """Run (or join, or read back) the model's study on ``seed`` and return the best trial's
        record. Every trial trains with early stopping on validation; the study's choice is the
        best validation score, the first in grid/trial order among equals."""
        import optuna

        quiet_optuna()
        dm = self.datamodule(spec, seed)
        identity = {
            "model": spec.class_path,
            "init_args": spec.init_args,
            "callbacks": spec.callbacks,
            "data": dm.fingerprint(),
            "trainer": deep_merge(self.exp.trainer, spec.trainer),
            "monitor": [*self.monitor(spec), self.exp.early_stopping],
            "space": space.raw,
            "pruner": None if space.is_grid else self.exp.pruner,
            "code": self.code(spec),
            "tag": self.run_tag,
        }
        name = study_name(self.exp.name, spec.name, seed, identity)
        # grids give the table they always gave: every point trains to the end
        pruner = optuna.pruners.MedianPruner(**self.exp.pruner) if self.exp.pruner and not space.is_grid else optuna.pruners.NopPruner()
        study = optuna.create_study(
            storage=self.storage(), study_name=name, direction="maximize" if self.monitor(spec)[1] == "max" else "minimize",
            sampler=space.sampler(sampler_seed(spec.name, seed)), pruner=pruner, load_if_exists=True,
        )
        budget = self.budget(spec)
        started = time.perf_counter()

        def objective(trial) -> float:
            return self.trial(spec, space.suggest(trial), seed, optuna_trial=trial)["best_score"]

        def said(frozen) -> None:
            state = frozen.state.name.lower()
            value = "" if frozen.value is None else f" val={frozen.value:.5f}"
            self._say(f"  {spec.name} seed={seed} trial {frozen.number} {state}{value} {space.hp_of(frozen) if frozen.params else ''}", started, 0, 0, eta=False)

        finished = run_study(study, objective, budget, on_trial=said if self.progress else None)
        chosen = best_trial(space, finished, self.monitor(spec)[1])
        if self.keep_checkpoints == "choosable" and not space.is_grid:
            self._drop_unchoosable(spec, space, finished)
        self._studies[(spec.name, seed)] = {
            "study": name,
            "trials": sum(t.state.name == "COMPLETE" for t in finished),
            "pruned": sum(t.state.name == "PRUNED" for t in finished),
        }
        # the record behind the choice: from the trial cache, or trained here when another
        # process (another machine) trained it for the shared study
        return self.trial(spec, space.hp_of(chosen), seed)

    def _drop_unchoosable(self, spec: ModelSpec, space: SearchSpace, finished: list) -> None:
        """Delete the weights of the complete trials that no budget of this study would choose.
        Every process sharing the study deletes the same set, in its own ``out``; a trial another
        process trained is not in this one's folder. Why: the case study's 30-trial searches left
        about 20 GB of checkpoints per block of seeds, nearly all of them never read again."""
        keep = choosable_trials(space, finished, self.monitor(spec)[1])
        for frozen in finished:
            key = frozen.user_attrs.get("trial")
            if frozen.state.name == "COMPLETE" and frozen.number not in keep and key:
                self._drop_weights(self._trial_dir(spec, key))

    def _drop_weights(self, tdir: Path) -> None:
        """Delete a trial's ``best.ckpt``; its ``trial.json`` stops naming it (a record names a
        checkpoint only while the file is there) and keeps the curve a re-run replays."""
        record_path = tdir / "trial.json"
        if record_path.exists():
            record = json.loads(record_path.read_text())
            if record.pop("checkpoint", None) is not None:
                atomic_write_text(record_path, json.dumps(record, indent=2))
        (tdir / "best.ckpt").unlink(missing_ok=True)

    def _trial_dir(self, spec: ModelSpec, key: str) -> Path:
        return self.out / "trials" / _slug(spec.name) / key

    # .................................................................. one trial
    def trial(self, spec: ModelSpec, hp: dict, seed: int, *, optuna_trial=None) -> dict:
        """Train one point ``hp`` of ``spec`` for ``seed`` (or read it from the cache) and return its
        record. Inside a study (``optuna_trial``) the validation curve is reported to the trial and a
        hopeless fit is pruned: ``optuna.TrialPruned`` leaves this method, its record kept."""
        model_hp, data_hp, trainer_hp = split_hp(hp)
        dm = self.datamodule(spec, seed, data_hp)
        trainer_cfg = deep_merge(deep_merge(self.exp.trainer, spec.trainer), trainer_hp)
        model_args = self.resolve(deep_merge(spec.init_args, model_hp), seed)
        callbacks = self.resolve(spec.callbacks, seed)
        identity = {
            "model": spec.class_path,
            "args": model_args,
            "callbacks": callbacks,
            "data": dm.fingerprint(),
            "seed": seed,
            "trainer": trainer_cfg,
            "monitor": [*self.monitor(spec), self.exp.early_stopping],
            "code": self.code(spec),
        }
        key = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]
        tdir = self._trial_dir(spec, key)
        record_path = tdir / "trial.json"
        if optuna_trial is not None:
            optuna_trial.set_user_attr("trial", key)  # pruned trials too: the study's folders, by trial number
        if (self.cache or key in self._fresh) and record_path.exists():
            record = json.loads(record_path.read_text())
            pruned, kept = bool(record.get("pruned")), (tdir / "best.ckpt").exists()
            if optuna_trial is None:
                if kept and not pruned:
                    return record
            # a cached trial tells the study what its fit told it, so the study decides as before;
            # its curve is all it needs (weights dropped as unchoosable are retrained if ever chosen)
            elif (kept or pruned or "curve" in record) and replay(optuna_trial, record.get("curve", []), pruned):
                return record
            # a pruned trial asked for in full (the pruner now lets it on, or outside a study): train it
        for stale in ("test.json", "test_per_user.csv.gz"):  # tested weights that are about to be replaced
            (tdir / stale).unlink(missing_ok=True)

        pl.seed_everything(seed, workers=True, verbose=False)
        model = self.build_model(spec, model_args, dm)
        trainer = self.trainer(trainer_cfg, callbacks, spec, tdir, seed, hp, key)
        pruning = None
        monitor, _ = self.monitor(spec)
        if optuna_trial is not None:
            pruning = PruneOnValidation(optuna_trial, monitor)
            trainer.callbacks.append(pruning)
        started = time.perf_counter()
        try:
            trainer.fit(model, datamodule=dm)
        except TrialPruned:
            ckpt = trainer.checkpoint_callback
            record = {
                "key": key, "model": spec.name, "class_path": spec.class_path, "hp": hp, "seed": seed, "pruned": True,
                "best_score": float(ckpt.best_model_score) if ckpt.best_model_score is not None else None,
                "epochs_run": int(trainer.current_epoch), "fit_seconds": time.perf_counter() - started,
                "curve": pruning.curve,
            }
            if self.keep_checkpoints == "all":
                record["checkpoint"] = str((tdir / "best.ckpt").relative_to(self.out))
            else:  # a pruned trial is never chosen
                (tdir / "best.ckpt").unlink(missing_ok=True)
            atomic_write_text(record_path, json.dumps(record, indent=2))
            self._fresh.add(key)
            raise
        fit_seconds = time.perf_counter() - started
        ckpt = trainer.checkpoint_callback
        saved_after_epoch = 1  # ModelCheckpoint stores the index of the epoch it saved in
        if ckpt.best_model_path:
            best_path, best_score = Path(ckpt.best_model_path), float(ckpt.best_model_score)
        elif trainer.global_step == 0 and monitor in trainer.callback_metrics:
            # counting models (Popularity, co-occurrence) take no optimiser step, and Lightning's
            # ModelCheckpoint only saves after a step: keep their single state ourselves
            best_path, best_score = tdir / "best.ckpt", float(trainer.callback_metrics[monitor])
            trainer.save_checkpoint(best_path)
            saved_after_epoch = 0  # saved after fit: "epoch" already counts the finished epoch
        else:
            raise CrossRecError(
                f"{spec.name}: no checkpoint was kept (is {monitor!r} logged in validation?)",
                "make sure validation runs (check_val_every_n_epoch <= max_epochs) and monitor names a logged metric",
            )
        # epochs of training behind the kept weights
        best_epoch = int(torch.load(best_path, map_location="cpu", weights_only=False)["epoch"]) + saved_after_epoch
        val = trainer.validate(model, datamodule=dm, ckpt_path=str(best_path), verbose=False)[0]
        record = {
            "key": key,
            "model": spec.name,
            "class_path": spec.class_path,
            "hp": hp,
            "seed": seed,
            "val": {k.split("/", 1)[1]: float(v) for k, v in val.items() if k.startswith("val/")},
            "best_score": best_score,
            "best_epoch": best_epoch,
            "epochs_run": int(trainer.current_epoch),
            "fit_seconds": fit_seconds,
            "checkpoint": str(best_path.relative_to(self.out)),
            # the data the weights were trained on, as the trial's key saw them before fit (a phase
            # schedule moves the DataModule's phase during fit): what `crossrec recommend` checks
            "data": identity["data"],
            # what callbacks concluded, e.g. the negative-transfer guard's verdict
            "signals": {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("guard/")},
        }
        if pruning is not None:
            record["curve"] = pruning.curve
        atomic_write_text(record_path, json.dumps(record, indent=2))
        self._fresh.add(key)
        return record

    def build_model(self, spec: ModelSpec, args: dict, dm):
        cls = import_class(spec.class_path)
        kwargs = {k: v for k, v in dm.model_arguments_for(cls).items() if k not in args}
        kwargs.update({k: instantiate(v) for k, v in args.items()})
        check_arguments(cls, kwargs)
        return cls(**kwargs)

    def trainer(self, cfg: dict, model_callbacks: list, spec: ModelSpec, tdir: Path, seed: int, hp: dict, key: str) -> pl.Trainer:
        from pytorch_lightning.callbacks import EarlyStopping
        from pytorch_lightning.loggers import CSVLogger

        cfg = dict(cfg)
        max_epochs = int(cfg.get("max_epochs", 10))
        cfg["max_epochs"] = max_epochs
        cfg["check_val_every_n_epoch"] = min(int(cfg.get("check_val_every_n_epoch", 1)), max_epochs)
        user_callbacks = [instantiate(c) for c in (cfg.pop("callbacks", None) or [])] + [instantiate(c) for c in model_callbacks]
        monitor, mode = self.monitor(spec)
        callbacks = [
            best_checkpoint(tdir, monitor, mode),
            *user_callbacks,
        ]
        if self.exp.early_stopping:
            callbacks.append(EarlyStopping(monitor=monitor, mode=mode, **self.exp.early_stopping))
        version = f"seed{seed}" + "".join(f"-{k}={v}" for k, v in hp.items()) + f"-{key[:8]}"
        cfg.setdefault("enable_progress_bar", self.progress)
        cfg.setdefault("deterministic", True)
        logger = CSVLogger(self.out / "logs", name=_slug(spec.name), version=_slug(version))
        return quiet_trainer(cfg.pop("max_epochs"), callbacks, logger=logger, **cfg)

    def test(self, spec: ModelSpec, record: dict) -> tuple[dict, pd.DataFrame]:
        """Test the chosen trial once (cached beside its checkpoint)."""
        tdir = self.out / Path(record["checkpoint"]).parent
        test_json, per_user_csv = tdir / "test.json", tdir / "test_per_user.csv.gz"
        if (self.cache or record["key"] in self._fresh) and test_json.exists() and per_user_csv.exists():
            return json.loads(test_json.read_text()), pd.read_csv(per_user_csv, dtype={"user": str})
        dm = self.datamodule(spec, record["seed"], split_hp(record["hp"])[1])
        cls = import_class(spec.class_path)
        model = _load_checkpoint(cls, self.out / record["checkpoint"])
        metrics = quiet_trainer().test(model, datamodule=dm, verbose=False)[0]
        metrics = {k.split("/", 1)[1]: float(v) for k, v in metrics.items() if k.startswith("test/")}
        per_user = model.test_per_user.copy() if model.test_per_user is not None else pd.DataFrame(columns=["user"])
        per_user["user"] = dm.user_vocab.decode(per_user["user"].to_numpy(dtype="int64")) if len(per_user) else per_user["user"]
        atomic_write(per_user_csv, lambda tmp: per_user.to_csv(tmp, index=False, compression="gzip"))
        atomic_write_text(test_json, json.dumps(metrics, indent=2))
        return metrics, per_user

    # .................................................................. the whole experiment
    def num_threads(self) -> int | None:
        """Torch threads per process: the config's ``num_threads``, else ``CROSSREC_NUM_THREADS``."""
        return self.exp.num_threads if self.exp.num_threads is not None else threads_from_env()

    def run(self, seeds: list[int], workers: int = 1) -> pd.DataFrame:
        exp = self.exp
        set_num_threads(self.num_threads())
        self._first_seed = seeds[0]
        self.diagnosis = self.diagnose(seeds[0])
        plan = [(seed, spec) for seed in seeds for spec in exp.models]
        rows, per_user_frames = [], []
        started = time.perf_counter()
        if workers > 1:
            from crossrec_lit.trial_pool import train_in_workers

            # trains (and tests) every trial that needs no other's result; the loop below then finds
            # them cached and does only what depends on them
            self._fresh |= train_in_workers(self, seeds, workers)
        for done, (seed, spec) in enumerate(plan):
            self._say(f"[{done + 1}/{len(plan)}] {spec.name} seed={seed}", started, done, len(plan))
            best = self.choose(spec, seed, tune=self._tune_now(seed))
            test, per_user = self.test(spec, best)
            common = {"model": spec.name, "protocol": spec.protocol or exp.protocol, "seed": seed, "params": json.dumps(best["hp"], sort_keys=True), "trial": Path(best["checkpoint"]).parent.as_posix()}
            for split, values in (("valid", best["val"]), ("test", test)):
                for name, value in values.items():
                    metric, _, k = name.partition("@")
                    rows.append({**common, "split": split, "metric": metric, "k": int(k) if k else None, "value": value})
            fit = {"fit_seconds": best["fit_seconds"], "best_epoch": best["best_epoch"], **best.get("signals", {})}
            study = self._studies.get((spec.name, seed))
            if study:  # the search behind the choice (tuning seed): trials trained and pruned
                fit.update(search_trials=study["trials"], search_pruned=study["pruned"])
            rows.extend({**common, "split": "fit", "metric": name, "k": None, "value": value} for name, value in fit.items())
            per_user_frames.append(per_user.assign(model=spec.name, seed=seed))
        results = pd.DataFrame(rows, columns=RESULT_COLUMNS)
        results["k"] = results["k"].astype("Int64")
        per_user_all = pd.concat(per_user_frames, ignore_index=True) if per_user_frames else pd.DataFrame()
        self.write(results, per_user_all)
        self._say(f"done: {len(plan)} runs", started, len(plan), len(plan))
        return results

    def diagnose(self, seed: int) -> str:
        """Whether transfer can work here, before any training (shared customers, their activity,
        co-occurrence against popularity on the validation users); printed and put in the summary."""
        from crossrec_lit.diagnosis import diagnose_transfer, diagnosis_markdown

        text = diagnosis_markdown(diagnose_transfer(self.datamodule(None, seed)), heading_level=2)
        if self.progress:
            print(text, file=sys.stderr, flush=True)
        return text

    def write(self, results: pd.DataFrame, per_user: pd.DataFrame) -> None:
        from crossrec_lit.evaluation.stats import summary_markdown

        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write(self.out / "results.csv", lambda tmp: results.to_csv(tmp, index=False))
        if len(per_user):
            cols = ["model", "seed", "user"] + [c for c in per_user.columns if c not in ("model", "seed", "user")]
            atomic_write(self.out / "per_user.csv.gz", lambda tmp: per_user[cols].to_csv(tmp, index=False, compression="gzip"))
        text = summary_markdown(results, per_user, title=self.exp.name, metrics=self.exp.summary_metrics, baselines=self.exp.baselines)
        head, _, tables = text.partition("\n## ")
        text = f"{head.rstrip()}\n\n{self.diagnosis.strip()}\n\n## {tables}" if tables and self.diagnosis else text
        # the step after the decision: where a model of the table gives its lists
        out = os.path.relpath(self.out) if self.out.is_relative_to(Path.cwd()) else str(self.out)
        text = (f"{text.rstrip()}\n\nTop-k lists for your customers from a model of these tables: "
                f"`crossrec recommend --config <this experiment's config> --out {out} --model <name> --k 10 --output recommendations.csv`\n")
        atomic_write_text(self.out / "summary.md", text)

    def _say(self, message: str, started: float, done: int, total: int, *, eta: bool = True) -> None:
        if not self.progress:
            return
        elapsed = time.perf_counter() - started
        if not eta:
            print(f"{message} ({elapsed:.0f}s)", file=sys.stderr, flush=True)
            return
        left = f", about {elapsed / done * (total - done):.0f}s left" if done else ""
        print(f"{message} ({done} done, {total - done} to go, {elapsed:.0f}s elapsed{left})", file=sys.stderr, flush=True)


def run_experiment(
    config: str | os.PathLike | Experiment,
    seeds: int | list[int] | None = None,
    out: str | os.PathLike = "runs/experiment",
    *,
    smoke: bool = False,
    cache: bool = True,
    progress: bool = True,
    workers: int | None = None,
    storage: str | None = None,
    trials: int | None = None,
    heartbeat: int | None = 60,
    first_seed: int = 0,
    keep_checkpoints: str = "choosable",
    num_threads: int | None = None,
) -> pd.DataFrame:
    """Run an experiment; returns the tidy results table (also written to ``out``).

    ``seeds`` is a count (seeds ``first_seed .. first_seed + n - 1``) or an explicit list; by
    default the config's ``seeds``. A block of seeds other than 0..n-1 is a repetition of the whole
    experiment, search included (the search runs on the block's first seed): the book's regression
    check runs chapter seed s as the block ``s * n .. s * n + n - 1`` to see how far training moves.
    ``workers``: processes that train independent trials side by side (default ``CROSSREC_WORKERS``,
    else 1); each uses the config's ``num_threads`` torch threads, so workers x threads should not
    exceed the cores.

    ``storage``: the SQLAlchemy URL of the Optuna storage that holds the models' studies (default
    ``sqlite:///<out>/studies.db``); processes given the same URL share the studies and split their
    trials (each may have its own ``out``: a chosen trial another process trained is retrained
    where its checkpoint is missing, with the same result). ``trials``: every search's budget,
    overriding the config's (grids keep their points). ``heartbeat``: seconds between a running
    trial's heartbeats; a trial silent for twice that is failed and queued again (None: off).
    ``keep_checkpoints``: ``"choosable"`` keeps a searched trial's weights only where some budget
    would choose it (a re-run with any budget replays the others from their recorded curves);
    ``"all"`` keeps every trial's ``best.ckpt``, e.g. to study the unchosen ones.
    ``num_threads``: torch threads of every process, in place of the config's ``num_threads`` (a
    chapter's own ``num_threads`` parameter reaches its experiments through this; None: the config's,
    else ``CROSSREC_NUM_THREADS``). Trials are cached without it: threads change only the order of
    floating-point sums, whose effect on a trained number the book's regression bands measure.
    """
    exp = config if isinstance(config, Experiment) else load_experiment(config, smoke=smoke)
    if num_threads is not None:
        if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
            raise CrossRecError(f"num_threads must be a whole number >= 1, got {num_threads!r}", "use e.g. 1 (one thread per worker process) or None for the config's")
        exp = replace(exp, num_threads=num_threads)
    if isinstance(first_seed, bool) or not isinstance(first_seed, int) or first_seed < 0:
        raise CrossRecError(f"first seed must be a whole number >= 0, got {first_seed!r}", "use 0 (the default) or e.g. 5 for a second block of 5 seeds")
    if seeds is None:
        seed_list = [first_seed + s for s in exp.seeds]
    elif isinstance(seeds, int):
        if seeds < 1:
            raise CrossRecError(f"--seeds must be >= 1, got {seeds}", "run at least one seed")
        seed_list = list(range(first_seed, first_seed + seeds))
    elif first_seed:
        raise CrossRecError(f"first seed {first_seed} with an explicit seed list {list(seeds)}", "give the seeds as a list, or a count with a first seed, not both")
    else:
        seed_list = [int(s) for s in seeds]
    workers = workers_from_env() if workers is None else workers
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise CrossRecError(f"workers must be a whole number >= 1, got {workers!r}", "pass workers=1 (one process) or up to the number of cores")
    if trials is not None:
        _check_budget(trials, "--trials")
    if heartbeat is not None and (isinstance(heartbeat, bool) or not isinstance(heartbeat, int) or heartbeat < 1):
        raise CrossRecError(f"heartbeat must be a whole number of seconds >= 1, got {heartbeat!r}", "use e.g. 60, or None for no heartbeat")
    with warnings.catch_warnings():
        filter_known_warnings()
        runner = Runner(exp, out, cache=cache, progress=progress, storage=storage, trials=trials, heartbeat=heartbeat, keep_checkpoints=keep_checkpoints)
        return runner.run(seed_list, workers=workers)


RESULT_COLUMNS = ["model", "protocol", "split", "metric", "k", "seed", "value", "params", "trial"]


def workers_from_env() -> int:
    """Worker processes from ``CROSSREC_WORKERS`` (default 1)."""
    value = os.environ.get("CROSSREC_WORKERS", "").strip()
    if not value:
        return 1
    try:
        workers = int(value)
    except ValueError:
        raise CrossRecError(f"CROSSREC_WORKERS={value!r} is not a whole number", "set it to e.g. 2, or unset it for one process") from None
    if workers < 1:
        raise CrossRecError(f"CROSSREC_WORKERS={value!r} must be >= 1", "set it to e.g. 2, or unset it for one process")
    return workers


def chosen_trial(out: str | os.PathLike, model: str, seed: int) -> dict:
    """The record of the trial an experiment tested for (``model``, ``seed``): what ``trial.json``
    holds (hp, validation metrics, best epoch, fit seconds, checkpoint...) plus ``folder``, the
    trial's folder, which also holds ``best.ckpt``, ``test.json`` and ``test_per_user.csv.gz``.

    Read through ``<out>/results.csv``, so it is the run the table reports even where older trials
    of the same model (other code, other grid points) lie beside it.
    """
    out = Path(out)
    path = out / "results.csv"
    if not path.is_file():
        raise CrossRecError(f"{path} does not exist", f"run the experiment first: run_experiment(config, seeds, out={str(out)!r})")
    results = pd.read_csv(path)
    if "trial" not in results.columns:
        raise CrossRecError(f"{path} was written by an older crossrec_lit and names no trials", f"re-run run_experiment with out={str(out)!r} (cached trials are reused)")
    rows = results[(results["model"] == model) & (results["seed"] == int(seed))]
    if rows.empty:
        raise CrossRecError(
            f"{path} has no run of model {model!r} with seed {seed}",
            f"use one of the models {sorted(results['model'].unique())} and seeds {sorted(int(s) for s in results['seed'].unique())}",
        )
    folder = out / rows["trial"].iloc[0]
    record = json.loads((folder / "trial.json").read_text())
    record["folder"] = folder
    return record


def load_trained(out: str | os.PathLike, model: str, seed: int, **kwargs):
    """The model an experiment tested for (``model``, ``seed``), loaded from its kept checkpoint on
    the CPU, in eval mode; ``kwargs`` go to ``load_from_checkpoint`` (e.g. evaluation settings)."""
    return load_trial_model(out, chosen_trial(out, model, seed), **kwargs)


def load_trial_model(out: str | os.PathLike, record: dict, **kwargs):
    """The model of a trial record (:func:`chosen_trial`) of the run in ``out``, from its kept
    checkpoint on the CPU, in eval mode: for a caller that already holds the record."""
    net = _load_checkpoint(import_class(record["class_path"]), Path(out) / record["checkpoint"], **kwargs)
    net.eval()
    return net


def _load_checkpoint(cls, path: Path, **kwargs):
    with warnings.catch_warnings():
        # counting models (Popularity, co-occurrence, random scores) have no parameters, and
        # Lightning says so on every load: in worker processes that line lands on the book's pages
        warnings.filterwarnings("ignore", message=r".*contains no parameters.*")
        return cls.load_from_checkpoint(path, map_location="cpu", weights_only=False, **kwargs)


def _class_paths(value) -> list[str]:
    """Every ``class_path`` named in a spec (models, data sources, callbacks), nested ones included."""
    if isinstance(value, dict):
        own = [value["class_path"]] if isinstance(value.get("class_path"), str) else []
        return own + [c for v in value.values() for c in _class_paths(v)]
    if isinstance(value, (list, tuple)):
        return [c for v in value for c in _class_paths(v)]
    return []


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.=" else "_" for c in text)


def main(argv: list[str] | None = None, prog: str = "python -m crossrec_lit.experiment") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="experiment YAML (see configs/)")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (FIRST..FIRST+N-1); default: the config's seeds")
    parser.add_argument("--first-seed", type=int, default=0, metavar="FIRST", help="first of the --seeds seeds (default 0; e.g. 5 repeats a 5-seed experiment on new seeds)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--smoke", action="store_true", help="apply the config's smoke: overrides (tiny, fast)")
    parser.add_argument("--no-cache", action="store_true", help="retrain even when a cached trial matches")
    parser.add_argument("--workers", type=int, default=None, help="processes training independent trials side by side (default: $CROSSREC_WORKERS, else 1)")
    parser.add_argument("--trials", type=int, default=None, help="budget of every model's search (default: the config's trials; grids keep their points)")
    parser.add_argument("--storage", default=None, help="SQLAlchemy URL of the Optuna storage shared by processes (default: sqlite:///<out>/studies.db)")
    parser.add_argument("--heartbeat", type=int, default=60, help="seconds between a trial's heartbeats; a trial silent for twice that is retried (default 60)")
    parser.add_argument("--num-threads", type=int, default=None, help="torch threads per process, in place of the config's num_threads")
    parser.add_argument("--keep-checkpoints", choices=KEEP_CHECKPOINTS, default="choosable",
                        help="searched trials' weights: only where some budget would choose them (default), or all")
    parser.add_argument("--pair", default=None, metavar="SOURCE:TARGET", help="run the config on another directed pair of stores, e.g. Sports:Toys")
    parser.add_argument("--models", default=None, help="comma-separated names of the config's models to run (default: all)")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.add_argument("--verbose", action="store_true", help="show Lightning's informational messages")
    args = parser.parse_args(argv)
    if not args.verbose:
        quiet_lightning_logs()
    try:
        config = load_experiment(args.config, smoke=args.smoke)
        if args.pair:
            config = with_pair(config, *parse_pair(args.pair))
        if args.models:
            # commas inside parentheses belong to a name, e.g. "Co-occurrence (b, Beauty)"
            config = with_models(config, [n.strip() for n in re.split(r",(?![^()]*\))", args.models) if n.strip()])
        run_experiment(
            config, args.seeds, args.out, cache=not args.no_cache, progress=not args.quiet,
            workers=args.workers, storage=args.storage, trials=args.trials, heartbeat=args.heartbeat,
            first_seed=args.first_seed, keep_checkpoints=args.keep_checkpoints, num_threads=args.num_threads,
        )
    except CrossRecError as exc:
        print(f"crossrec experiment: error: {exc}", file=sys.stderr)
        return 2
    except SIGTERMException:
        # Lightning's answer to SIGTERM during fit is a SystemExit, which would exit with status 0
        print("crossrec experiment: stopped by SIGTERM; finished trials are cached, run the same command to go on", file=sys.stderr)
        return 128 + 15
    print((Path(args.out) / "summary.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
