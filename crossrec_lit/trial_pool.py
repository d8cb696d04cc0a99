"""Training an experiment's independent trials side by side in worker processes.

An experiment is many small single-threaded fits (models x grid points x seeds), and one thread per
fit is what is fastest on a shared CPU (see :mod:`crossrec_lit.runtime`). On a machine with N cores
N such fits run in parallel at nearly N times the throughput, which Lightning's own strategies do
not give us: DDP splits *one* fit across processes and synchronises every step.

:func:`train_in_workers` trains, in a pool of processes, every trial as soon as its inputs are
known: a tuned model's study on the tuning seed as one task (its trials run one after another in
that worker, so a seeded search gives the same trials with any number of workers; studies of
different models run side by side); a tuned model's other seeds once its study has chosen; a model
that starts from a pretrained checkpoint (``${pretrained:NAME}``) once the pretrain entry's trials
for that seed are done. The pool is for independent models on one machine; several machines share
studies through an Optuna storage instead (``--storage``, see :mod:`crossrec_lit.search`). A trial
that depends on another model's score (``${baseline:...}``) is left to the calling process.
Workers write each trial to the runner's cache exactly as the sequential runner would (same key,
same folder, same record), and test the trials whose choice is already made; the runner then walks
its plan as usual and finds them done. Results do not depend on the
number of workers: every trial seeds itself, and the DataModules are rebuilt from seeded configs in
each process.

Workers are started with ``spawn`` (safe with torch's thread pools, and from Jupyter kernels) and
each keeps its own DataModules, so memory grows with the number of workers.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import sys
import threading
import time

from crossrec_lit.config import placeholders
from crossrec_lit.errors import CrossRecError

__all__ = ["train_in_workers"]

_RUNNER = None  # the Runner of this worker process


def train_in_workers(runner, seeds: list[int], workers: int) -> set[str]:
    """Train (and, where the choice is already made, test) the runner's trials in ``workers``
    processes, each as soon as what it depends on is done; returns the keys of the trials trained.
    A trial that fails in a worker stops the pool and raises its error here."""
    exp = runner.exp
    # (spec, seed) items still to submit: the models, and the pretrain entries they start from
    refs = {spec.name: _references(spec) for spec in exp.models}
    needs = {name: r.get("pretrained", set()) for name, r in refs.items()}
    used = {ref for refs in needs.values() for ref in refs if ref in exp.pretrain}
    needs.update({name: set() for name in used})
    # left to the calling process: models that need another model's score, or name an unknown
    # pretrain entry (the runner's own error message explains that one)
    items = [
        (runner.spec(name), seed)
        for seed in seeds
        for name in [*sorted(used), *(m.name for m in exp.models)]
        if needs[name] <= used and "baseline" not in refs.get(name, {})
    ]
    groups: dict[tuple[str, int], list[cf.Future]] = {}  # (name, seed) -> its trials' futures
    tasks: dict[cf.Future, tuple[str, dict, int]] = {}
    processed: set[cf.Future] = set()
    trained: set[str] = set()
    started = time.perf_counter()

    def group_done(name: str, seed: int) -> bool:
        futures = groups.get((name, seed))
        return futures is not None and all(f in processed for f in futures)

    context = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker, initargs=(exp, str(runner.out), runner.options(), runner.num_threads(), os.getpid())) as pool:

        def submit_ready() -> None:
            for item in list(items):
                spec, seed = item
                if not all(group_done(ref, seed) for ref in needs[spec.name]):
                    continue
                study = runner.needs_search(spec, seed)
                points = [None] if study else runner.candidates(spec, seed)
                if points is None:
                    continue  # waits for the study's choice on the tuning seed
                items.remove(item)
                test = spec.name not in used  # pretrain entries are never tested
                # the choices made and the trials trained so far: a worker that resolves
                # ${pretrained:...} must find the pretrain entry's choice and reuse its trial
                future = pool.submit(_train, spec.name, points[0], seed, test, runner._first_seed, dict(runner._chosen), set(trained))
                tasks[future] = (spec.name, points[0], seed)
                groups[(spec.name, seed)] = [future]

        try:
            submit_ready()
            while tasks:
                finished, _ = cf.wait(list(tasks), return_when=cf.FIRST_COMPLETED)
                for future in finished:
                    name, hp, seed = tasks.pop(future)
                    try:
                        record, keys = future.result()  # re-raises a worker's error
                    except cf.process.BrokenProcessPool:
                        raise CrossRecError(
                            f"a worker process ended abruptly while {name} seed={seed} was training (killed by a signal, or out of memory)",
                            "run the same command again: finished trials are cached, only the rest train (fewer --workers if memory ran out)",
                        ) from None
                    except SystemExit:
                        # Lightning turns a SIGTERM during fit into SIGTERMException, a SystemExit:
                        # re-raised here it would end the runner silently with status 0, results unwritten
                        raise CrossRecError(
                            f"the worker training {name} seed={seed} was stopped by a signal (SIGTERM) before its trial finished",
                            "run the same command again: finished trials are cached, only the rest train",
                        ) from None
                    trained |= keys
                    processed.add(future)
                    _say(runner, f"trained {name} seed={seed} " + (str(record["hp"]) if hp is None else str(hp or "")), started, len(trained), len(tasks))
                    runner._chosen.setdefault(name, record["hp"])  # a study's choice, for the later seeds
                submit_ready()
        except BaseException:
            for future in tasks:
                future.cancel()
            raise
    return trained


def _references(spec) -> dict[str, set[str]]:
    """The runs a spec refers to, by kind: ``{"pretrained": {...}, "baseline": {...}}``."""
    out: dict[str, set[str]] = {}
    for name in placeholders([spec.init_args, spec.callbacks, spec.grid, spec.data]):
        kind, _, ref = name.partition(":")
        if kind in ("pretrained", "baseline"):
            out.setdefault(kind, set()).add(ref)
    return out


def _start_worker(exp, out: str, options: dict, num_threads: int | None, parent: int) -> None:
    global _RUNNER
    # first, before importing Lightning and the models (tens of seconds on a loaded box): the
    # runner may die while this worker is still starting
    _exit_with_parent(parent)
    from crossrec_lit.experiment import Runner
    from crossrec_lit.runtime import filter_known_warnings, quiet_lightning_logs, set_num_threads

    filter_known_warnings()
    quiet_lightning_logs()
    set_num_threads(num_threads)
    _RUNNER = Runner(exp, out, progress=False, **options)


def _exit_with_parent(parent: int, every: float = 2.0) -> None:
    """Leave when the runner that started this worker is gone.

    A runner killed with SIGKILL (or a notebook kernel restarted) cannot shut its pool down, and
    its workers went on training for an hour on a shared machine (seen). Polling the parent id is
    portable (Linux's PR_SET_PDEATHSIG is not); an orphan is re-parented, so its parent id changes.
    A trial cut short this way leaves no record (records are written atomically) and is retrained.
    """

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every)
        os._exit(1)

    threading.Thread(target=watch, name="crossrec-exit-with-parent", daemon=True).start()


def _train(name: str, hp: dict | None, seed: int, test: bool, first_seed: int, chosen: dict, trained: set[str]) -> tuple[dict, set[str]]:
    """Train one point ``hp`` of model ``name``, or with ``hp=None`` run its study; returns the
    chosen record and the keys of the trials trained here."""
    runner = _RUNNER
    runner._first_seed = first_seed
    runner._chosen.update(chosen)
    runner._fresh |= trained  # reused even with cache=False: they were trained in this run
    before = set(runner._fresh)
    spec = runner.spec(name)
    record = runner.choose(spec, seed, tune=True) if hp is None else runner.trial(spec, hp, seed)
    if test:
        runner.test(spec, record)
    return record, (runner._fresh - before) | {record["key"]}


def _say(runner, message: str, started: float, done: int, running: int) -> None:
    if runner.progress:
        elapsed = time.perf_counter() - started
        print(f"[workers] {message} ({done} trained, {running} queued or running, {elapsed:.0f}s elapsed)", file=sys.stderr, flush=True)
