"""Recommendations from a finished experiment: the model behind one row of its table, for customers.

    crossrec recommend --config configs/x.yaml --out runs/x --model Joint --k 10 --output recs.csv

After ``crossrec experiment`` has said which model to trust, this writes that model's top-``k``
products of the target store for every customer (or for the ids of ``--users``): one row per
(customer, rank) with the product id and its score. The model is the trial the experiment tested
for that model and seed (:func:`crossrec_lit.experiment.chosen_trial`), and the data are rebuilt
from the same config, so customer and product ids mean what they meant in training; data that
changed since the run are refused rather than scored against the wrong ids.

The weights are those the experiment tested: each customer's held-out validation and test
purchases were not trained on (they are excluded from the lists, as every seen product is).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import warnings
from pathlib import Path

import pandas as pd

from crossrec_lit.atomic import atomic_write
from crossrec_lit.errors import CrossRecError
from crossrec_lit.experiment import Experiment, Runner, chosen_trial, load_experiment, load_trial_model, parse_pair, with_pair
from crossrec_lit.runtime import filter_known_warnings, quiet_lightning_logs, set_num_threads, threads_from_env
from crossrec_lit.search import split_hp

OUTPUT_FORMATS = (".csv", ".csv.gz", ".parquet")


def recommend_from_run(
    config: str | os.PathLike | Experiment,
    out: str | os.PathLike,
    model: str,
    *,
    seed: int = 0,
    users: list[str] | None = None,
    k: int = 10,
    exclude_seen: bool = True,
    with_text: bool = False,
    skip_unknown: bool = False,
) -> pd.DataFrame:
    """Top-``k`` products for ``users`` (default: every customer the data know, in either store) from the model
    an experiment tested for (``model``, ``seed``); ``config`` is the experiment's config (or the
    loaded :class:`Experiment`, e.g. after ``with_pair``). Columns as
    :meth:`crossrec_lit.data.InteractionDataModule.recommend`. An id the data do not know is an
    error, or with ``skip_unknown`` gets no rows (a customer list from elsewhere often holds
    customers who have bought nothing yet)."""
    exp = config if isinstance(config, Experiment) else load_experiment(config)
    record = chosen_trial(out, model, seed)
    runner = Runner(exp, out, progress=False)
    spec = runner.spec(model)
    _, data_hp, _ = split_hp(record.get("hp") or {})
    with warnings.catch_warnings():
        filter_known_warnings()
        dm = runner.datamodule(spec, int(seed), data_hp)
        trained_on = record.get("data")
        if trained_on is not None and trained_on != dm.fingerprint():
            raise CrossRecError(
                f"the data {exp.name!r} reads now differ from those {model!r} (seed {seed}) was trained on in {out}",
                "give the config (and --pair/--smoke) the run used, or re-run crossrec experiment on the new data",
            )
        net = load_trial_model(out, record)
        # records written before they named their data carry no fingerprint: their sizes still tell
        if (getattr(net, "num_users", dm.num_users), getattr(net, "num_items", dm.num_items)) != (dm.num_users, dm.num_items):
            raise CrossRecError(
                f"{model!r} was trained on {net.num_users} customers x {net.num_items} products, the data now have {dm.num_users} x {dm.num_items}",
                "give the config the run used, or re-run crossrec experiment on the new data",
            )
        ids = dm.user_vocab.to_list() if users is None else [str(u) for u in users]
        known = set(dm.user_vocab.ids)
        unknown = list(dict.fromkeys(u for u in ids if u not in known))
        if unknown and not skip_unknown:
            raise CrossRecError(
                f"{len(unknown):,} customer id(s) that the data do not know, e.g. {unknown[:5]}",
                "leave them out, or pass --skip-unknown (skip_unknown=True) to list the known ones only",
            )
        ids = [u for u in ids if u in known]
        return dm.recommend(net, ids, k=k, exclude_seen=exclude_seen, with_text=with_text)


def read_user_ids(path: str | os.PathLike) -> list[str]:
    """Customer ids from a file with one id per line (a first line ``user`` is a header)."""
    path = Path(path)
    if not path.is_file():
        raise CrossRecError(f"users file {path} does not exist", "pass a text file with one customer id per line")
    ids = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if ids[:1] == ["user"]:
        ids = ids[1:]
    if not ids:
        raise CrossRecError(f"users file {path} names no customer", "write one customer id per line")
    return ids


def write_recommendations(frame: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write ``frame`` to ``path`` (.csv, .csv.gz or .parquet) in one piece: a failed or killed
    write leaves no partial file."""
    path = Path(path)
    name = check_output(path)
    if name.endswith(".parquet"):
        return atomic_write(path, lambda tmp: frame.to_parquet(tmp, index=False))
    compression = "gzip" if name.endswith(".gz") else None
    return atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False, compression=compression))


def check_output(path: str | os.PathLike) -> str:
    """The output's lower-case file name, if its format is one :func:`write_recommendations` writes."""
    name = Path(path).name.lower()
    if not name.endswith(OUTPUT_FORMATS):
        raise CrossRecError(f"output {path} has an unknown format", f"end its name with one of {', '.join(OUTPUT_FORMATS)}")
    if name.endswith(".parquet") and importlib.util.find_spec("pyarrow") is None:
        raise CrossRecError("writing Parquet files needs pyarrow, which is not installed", "pip install pyarrow (or crossrec_lit[parquet]), or write .csv.gz")
    return name


def main(argv: list[str] | None = None, prog: str = "python -m crossrec_lit.recommend") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="the experiment's YAML, as given to crossrec experiment")
    parser.add_argument("--out", required=True, help="the experiment's output folder")
    parser.add_argument("--model", required=True, help="a model name of the experiment's table (results.csv)")
    parser.add_argument("--seed", type=int, default=0, help="which seed's model (default 0)")
    parser.add_argument("--users", default=None, metavar="FILE", help="customer ids, one per line (default: every customer of either store)")
    parser.add_argument("--k", type=int, default=10, help="products per customer (default 10)")
    parser.add_argument("--output", default="recommendations.csv", help="where to write: .csv, .csv.gz or .parquet (default recommendations.csv)")
    parser.add_argument("--skip-unknown", action="store_true", help="leave out --users ids the data do not know, instead of stopping")
    parser.add_argument("--include-seen", action="store_true", help="keep products the customer already has in the target store")
    parser.add_argument("--with-text", action="store_true", help="add each product's text (title) where the data have it")
    parser.add_argument("--smoke", action="store_true", help="the config's smoke: overrides, as in a --smoke run")
    parser.add_argument("--pair", default=None, metavar="SOURCE:TARGET", help="the --pair the run used")
    parser.add_argument("--num-threads", type=int, default=None, help="torch threads (default: $CROSSREC_NUM_THREADS, else torch's)")
    args = parser.parse_args(argv)
    quiet_lightning_logs()
    try:
        config = load_experiment(args.config, smoke=args.smoke)
        set_num_threads(args.num_threads or config.num_threads or threads_from_env())
        if args.pair:
            config = with_pair(config, *parse_pair(args.pair))
        users = None if args.users is None else read_user_ids(args.users)
        # checked before the data are read and the model scores, which take minutes on real stores
        check_output(args.output)
        if args.k < 1:
            raise CrossRecError(f"--k must be >= 1, got {args.k}", "ask for at least one product per customer, e.g. --k 10")
        frame = recommend_from_run(config, args.out, args.model, seed=args.seed, users=users, k=args.k,
                                   exclude_seen=not args.include_seen, with_text=args.with_text, skip_unknown=args.skip_unknown)
        path = write_recommendations(frame, args.output)
    except CrossRecError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    print(f"{frame['user'].nunique():,} customers x {args.k} products from {args.model} (seed {args.seed}) -> {path}")
    if users is not None and args.skip_unknown:
        left_out = sorted(set(users) - set(frame["user"]))
        if left_out:
            print(f"left out {len(left_out):,} id(s) the data do not know, e.g. {left_out[:5]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
