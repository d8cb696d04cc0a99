"""Training an experiment's independent trials side by side in worker processes.

An experiment is many small single-threaded fits (models x grid points x seeds), and one thread per
fit is what is fastest on a shared CPU (see :mod:`crossrec_lit.runtime`). On a machine with N cores
N such fits run in parallel at nearly N times the throughput, which Lightning's own strategies do
not give us: DDP splits *one* fit across processes and synchronises every step.

:func:`train_in_workers` trains, in a pool of processes, every trial whose inputs are known before
any other trial finishes: every grid point of a tuning seed, and for the other seeds every model
without a grid. A grid model's later seeds are submitted as soon as all of its tuning-seed trials
are done (the choice is made by the same rule as :meth:`Runner.choose`). A trial that refers to
another run's result (``${baseline:...}``, ``${pretrained:...}``) is left to the calling process.
Workers write each trial to the runner's cache exactly as the sequential runner would (same key,
same folder, same record), and test single-point trials too; the runner then walks its plan as
usual and finds them done. Results do not depend on the number of workers: every trial seeds
itself, and the DataModules are rebuilt from seeded configs in each process.

Workers are started with ``spawn`` (safe with torch's thread pools, and from Jupyter kernels) and
each keeps its own DataModules, so memory grows with the number of workers.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import sys
import time

from crossrec_lit.config import placeholders

__all__ = ["train_in_workers"]

_RUNNER = None  # the Runner of this worker process


def train_in_workers(runner, seeds: list[int], workers: int) -> set[str]:
    """Train (and, where the choice is already made, test) the runner's independent trials in
    ``workers`` processes; returns the keys of the trials trained. A trial that fails in a worker
    stops the pool and raises its error here."""
    pending_grids: dict[str, list] = {}  # grid model -> tuning-seed futures still running
    later: dict[str, list[int]] = {}  # grid model -> seeds waiting for its choice
    trained: set[str] = set()
    tasks: dict[cf.Future, tuple[str, dict, int]] = {}
    started, done = time.perf_counter(), 0

    context = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker, initargs=(runner.exp, str(runner.out), runner.cache, runner.num_threads())) as pool:

        def submit(spec, hp: dict, seed: int, test: bool) -> cf.Future:
            future = pool.submit(_train, spec.name, hp, seed, test, runner._first_seed)
            tasks[future] = (spec.name, hp, seed)
            return future

        for seed in seeds:
            for spec in runner.exp.models:
                if _refers_to_runs(spec):
                    continue  # needs another run's result: the calling process trains it in order
                points = runner.candidates(spec, seed)
                if points is None:
                    later.setdefault(spec.name, []).append(seed)
                    continue
                futures = [submit(spec, hp, seed, test=len(points) == 1) for hp in points]
                if runner._tune_now(seed) and len(points) > 1:
                    pending_grids.setdefault(spec.name, []).extend(futures)
        total = len(tasks) + sum(len(s) for s in later.values())
        try:
            while tasks:
                finished, _ = cf.wait(list(tasks), return_when=cf.FIRST_COMPLETED)
                for future in finished:
                    name, hp, seed = tasks.pop(future)
                    record = future.result()  # re-raises a worker's error
                    trained.add(record["key"])
                    done += 1
                    _say(runner, f"trained {name} seed={seed}" + (f" {hp}" if hp else ""), started, done, total)
                    waiting = pending_grids.get(name)
                    if waiting is not None and all(f.done() for f in waiting):
                        # the same choice the runner makes: first best of the grid, in grid order
                        best = runner.pick_best([f.result() for f in waiting])
                        runner._chosen.setdefault(name, best["hp"])
                        del pending_grids[name]
                        for later_seed in later.pop(name, []):
                            submit(runner.spec(name), runner._chosen[name], later_seed, test=True)
        except BaseException:
            for future in tasks:
                future.cancel()
            raise
    return trained


def _refers_to_runs(spec) -> bool:
    names = placeholders([spec.init_args, spec.callbacks, spec.grid, spec.data])
    return any(name.partition(":")[0] in ("baseline", "pretrained") for name in names)


def _start_worker(exp, out: str, cache: bool, num_threads: int | None) -> None:
    global _RUNNER
    from crossrec_lit.experiment import Runner
    from crossrec_lit.runtime import filter_known_warnings, quiet_lightning_logs, set_num_threads

    filter_known_warnings()
    quiet_lightning_logs()
    set_num_threads(num_threads)
    _RUNNER = Runner(exp, out, cache=cache, progress=False)


def _train(name: str, hp: dict, seed: int, test: bool, first_seed: int) -> dict:
    runner = _RUNNER
    runner._first_seed = first_seed
    spec = runner.spec(name)
    record = runner.trial(spec, hp, seed)
    if test:
        runner.test(spec, record)
    return record


def _say(runner, message: str, started: float, done: int, total: int) -> None:
    if runner.progress:
        elapsed = time.perf_counter() - started
        print(f"[workers] {message} ({done}/{total} trials, {elapsed:.0f}s elapsed)", file=sys.stderr, flush=True)
