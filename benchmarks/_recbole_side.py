"""The RecBole side of benchmarks/peer_recbole.py. Runs INSIDE RecBole's own venv (.venv-recbole).

It is never imported by crossrec_lit or by the main venv: benchmarks/peer_recbole.py calls it as
a subprocess and exchanges data with it through files in a temporary folder. Two commands:

    python _recbole_side.py crosscheck IN.npz OUT.npz
        IN holds a dense score matrix ``scores`` [U, N], and the (row, col) coordinates of the
        relevant items ``truth_rows``/``truth_cols`` and of the items to mask
        ``exclude_rows``/``exclude_cols``. The scores go through exactly what RecBole's trainer does
        in full-sort evaluation (a padding column 0 at -inf, masked items at -inf,
        Collector.eval_batch_collect per batch of users, Evaluator.evaluate) and through the metric
        classes' per-user ``metric_info``. OUT: the means and per-user Recall/NDCG/MRR@K.

    python _recbole_side.py train --data-path DIR --dataset NAME --seed S --epochs E ... --out OUT.json
        Trains RecBole's BPR on the pre-split atomic files DIR/NAME/NAME.{train,valid,test}.inter
        (``benchmark_filename``), times every training epoch (RecBole's own ``_train_epoch``: batch
        building, negative sampling, forward, backward, optimiser step; never evaluation), selects
        the epoch on validation NDCG@10 with RecBole's early stopping, tests the best model with
        RecBole's full-ranking evaluator, and saves the best model's embeddings with the id tokens
        (``OUT.npz``) so the caller can evaluate the very same model with its own evaluator.

    python _recbole_side.py train-sasrec --data-path DIR --dataset NAME --seed S ... --out OUT.json
        Trains RecBole's SASRec on DIR/NAME/NAME.inter (user, item, and the purchase's position in
        the customer's history as its timestamp), split by RecBole itself leave-one-out in time
        order (``LS: valid_and_test``, ``TO``): the last purchase is the test item, the one before
        it the validation item, as in crossrec_lit. Times every training epoch and reports the
        number of training targets (RecBole's augmented prefixes) and the test metrics.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

import numpy as np
import torch

KS = [10]
METRICS = ["Recall", "NDCG", "MRR", "Hit", "Precision"]


def _pin_threads() -> None:
    torch.set_num_threads(int(os.environ.get("CROSSREC_NUM_THREADS", "1")))


def _base_config(data_path: str, ks=KS) -> dict:
    return {
        "data_path": data_path,
        "checkpoint_dir": os.path.join(data_path, "saved"),
        "use_gpu": False,
        "show_progress": False,
        "log_wandb": False,
        "save_dataset": False,
        "save_dataloaders": False,
        "metrics": METRICS,
        "topk": [int(k) for k in ks],
        "valid_metric": "NDCG@10",
        # RecBole rounds every reported metric to this many places (default 4)
        "metric_decimal_place": 12,
        "reproducibility": True,
        "state": "WARNING",
    }


# ---------------------------------------------------------------------------------- crosscheck
def crosscheck(path_in: str, path_out: str) -> None:
    from recbole.config import Config
    from recbole.evaluator import Collector, Evaluator
    from recbole.evaluator.metrics import MRR, NDCG, Hit, Precision, Recall

    data = np.load(path_in)
    ks = [int(k) for k in data["ks"]] if "ks" in data else KS
    scores = torch.from_numpy(np.asarray(data["scores"], dtype=np.float64))
    n_users, n_items = scores.shape
    workdir = os.path.dirname(os.path.abspath(path_out))
    # a Config only to carry the evaluation settings; no dataset is read (and it applies RecBole's
    # numpy compatibility aliases such as np.float, which its metric code still uses)
    eval_args = {"mode": "full", "order": "RO", "group_by": "user", "split": {"RS": [0.8, 0.1, 0.1]}}
    config = Config(model="BPR", dataset="crosscheck", config_dict={**_base_config(workdir, ks), "eval_args": eval_args})
    collector, evaluator = Collector(config), Evaluator(config)

    # RecBole's items are 1..N (0 is padding): shift by one and put the padding column at -inf,
    # exactly as Trainer._full_sort_batch_eval does; masked items get -inf there too
    full = torch.full((n_users, n_items + 1), -np.inf, dtype=torch.float64)
    full[:, 1:] = scores
    full[torch.from_numpy(data["exclude_rows"]), torch.from_numpy(data["exclude_cols"]) + 1] = -np.inf
    t_rows, t_cols = data["truth_rows"].astype(np.int64), data["truth_cols"].astype(np.int64) + 1
    batch = int(data["batch_users"]) if "batch_users" in data else 128
    for start in range(0, n_users, batch):
        stop = min(start + batch, n_users)
        sel = (t_rows >= start) & (t_rows < stop)
        collector.eval_batch_collect(full[start:stop], None, torch.from_numpy(t_rows[sel] - start), torch.from_numpy(t_cols[sel]))
    struct = collector.get_data_struct()
    means = evaluator.evaluate(struct)
    out = {f"mean_{k}": float(v) for k, v in means.items()}
    # the same metric classes, per user: column K-1 of metric_info is metric@K
    pos_index, pos_len = NDCG(config).used_info(struct)
    per_user = {
        "ndcg": NDCG(config).metric_info(pos_index, pos_len),
        "recall": Recall(config).metric_info(pos_index, pos_len),
        "mrr": MRR(config).metric_info(pos_index),
        "hit": Hit(config).metric_info(pos_index),
        "precision": Precision(config).metric_info(pos_index),
    }
    for name, values in per_user.items():
        for k in ks:
            out[f"{name}@{k}"] = np.asarray(values[:, k - 1], dtype=np.float64)
    np.savez(path_out, **out)


# ---------------------------------------------------------------------------------- training
def _timed_run(model_name: str, args, settings: dict):
    """RecBole's config, dataset, loaders, ``model_name`` and a Trainer that times each training
    epoch (its ``_train_epoch``: batches, sampling, forward, backward, step; never evaluation).

    ``settings`` are the model's own; the schedule (seed, lr, batch, epochs, validation and early
    stopping) comes from ``args`` for every model alike. Returns (dataset, (train, valid, test),
    model, trainer, epoch_seconds), the last filled as the trainer fits.
    """
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.trainer import Trainer
    from recbole.utils import get_model, init_seed

    epoch_seconds: list[float] = []

    class TimedTrainer(Trainer):
        def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
            start = time.perf_counter()
            loss = super()._train_epoch(train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress)
            epoch_seconds.append(time.perf_counter() - start)
            return loss

    cfg = {
        **_base_config(args.data_path),
        "seed": args.seed,
        "USER_ID_FIELD": "user_id",
        "ITEM_ID_FIELD": "item_id",
        "train_batch_size": args.batch_size,
        "learning_rate": args.lr,
        "learner": "adam",
        "weight_decay": 0.0,
        "epochs": args.epochs,
        "eval_step": max(args.eval_step, 1),
        "stopping_step": args.stopping_step,
        **settings,
    }
    config = Config(model=model_name, dataset=args.dataset, config_dict=cfg)
    init_seed(config["seed"], config["reproducibility"])
    logging.getLogger().setLevel(logging.WARNING)
    dataset = create_dataset(config)
    loaders = data_preparation(config, dataset)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = get_model(model_name)(config, loaders[0]._dataset).to(config["device"])
    return dataset, loaders, model, TimedTrainer(config, model), epoch_seconds


def train(args) -> None:
    throughput_only = args.eval_step <= 0
    dataset, (train_data, valid_data, test_data), model, trainer, epoch_seconds = _timed_run("BPR", args, {
        "load_col": {"inter": ["user_id", "item_id"]},
        "benchmark_filename": ["train", "valid", "test"],
        "embedding_size": args.dim,
        "train_neg_sample_args": {"distribution": "uniform", "sample_num": 1, "alpha": 1.0, "dynamic": False, "candidate_num": 0},
        "eval_args": {"mode": "full", "order": "RO", "group_by": "user", "split": {"RS": [0.8, 0.1, 0.1]}},
        # full-sort evaluation scores eval_batch_size // n_items users per batch: 256 users
        "eval_batch_size": 256 * (args.num_items + 1),
    })

    n_train = len(train_data._dataset)
    info = {
        # what RecBole read, without its padding user/item 0
        "counts": {
            "users": int(dataset.user_num - 1),
            "items": int(dataset.item_num - 1),
            "train": int(n_train),
            "valid": int(len(valid_data._dataset)),
            "test": int(len(test_data._dataset)),
        },
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    import recbole

    info["recbole"] = recbole.__version__
    start = time.perf_counter()
    if throughput_only:
        trainer.fit(train_data, None, verbose=False, saved=False, show_progress=False)
    else:
        trainer.fit(train_data, valid_data, verbose=False, saved=True, show_progress=False)
    info["fit_seconds"] = time.perf_counter() - start
    info["epoch_seconds"] = epoch_seconds
    info["epochs_run"] = len(epoch_seconds)
    info["samples_per_epoch"] = int(n_train)
    if not throughput_only:
        info["best_valid"] = {k: float(v) for k, v in (trainer.best_valid_result or {}).items()}
        start = time.perf_counter()
        test = trainer.evaluate(test_data, load_best_model=True, show_progress=False)
        info["test_seconds"] = time.perf_counter() - start
        info["test"] = {k: float(v) for k, v in test.items()}
        info["test_users"] = int(len(test_data.uid_list))
        checkpoint = torch.load(trainer.saved_model_file, map_location="cpu")
        info["best_epoch"] = int(checkpoint["epoch"]) + 1
        # the best model, for evaluation by the caller's own code; row 0 of each table is padding
        np.savez(
            os.path.splitext(args.out)[0] + ".npz",
            user_emb=model.user_embedding.weight.detach().numpy(),
            item_emb=model.item_embedding.weight.detach().numpy(),
            user_tokens=np.asarray(dataset.field2id_token["user_id"], dtype=object).astype(str),
            item_tokens=np.asarray(dataset.field2id_token["item_id"], dtype=object).astype(str),
        )
    with open(args.out, "w") as f:
        json.dump(info, f)


def train_sasrec(args) -> None:
    throughput_only = args.eval_step <= 0
    dataset, (train_data, valid_data, test_data), model, trainer, epoch_seconds = _timed_run("SASRec", args, {
        "TIME_FIELD": "timestamp",
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "MAX_ITEM_LIST_LENGTH": args.max_len,
        "n_layers": args.blocks,
        "n_heads": args.heads,
        "hidden_size": args.dim,
        "inner_size": args.ffn_dim,
        "hidden_dropout_prob": args.dropout,
        "attn_dropout_prob": args.dropout,
        "loss_type": "CE",
        "train_neg_sample_args": None,
        "eval_args": {"mode": "full", "order": "TO", "group_by": "user", "split": {"LS": "valid_and_test"}},
        "eval_batch_size": 256,
    })
    import recbole

    info = {
        "counts": {"users": int(dataset.user_num - 1), "items": int(dataset.item_num - 1), "valid": int(len(valid_data._dataset)), "test": int(len(test_data._dataset))},
        "targets_per_epoch": int(len(train_data._dataset)),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "recbole": recbole.__version__,
    }
    start = time.perf_counter()
    trainer.fit(train_data, None if throughput_only else valid_data, verbose=False, saved=not throughput_only, show_progress=False)
    info["fit_seconds"] = time.perf_counter() - start
    info["epoch_seconds"] = epoch_seconds
    info["epochs_run"] = len(epoch_seconds)
    if not throughput_only:
        info["best_valid"] = {k: float(v) for k, v in (trainer.best_valid_result or {}).items()}
        test = trainer.evaluate(test_data, load_best_model=True, show_progress=False)
        info["test"] = {k: float(v) for k, v in test.items()}
        info["best_epoch"] = int(torch.load(trainer.saved_model_file, map_location="cpu")["epoch"]) + 1
    with open(args.out, "w") as f:
        json.dump(info, f)


def main() -> None:
    _pin_threads()
    argv = sys.argv[1:]
    # RecBole's Config parses sys.argv for --key=value overrides: keep ours away from it
    sys.argv = sys.argv[:1]
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("crosscheck")
    c.add_argument("path_in")
    c.add_argument("path_out")
    t = sub.add_parser("train")
    t.add_argument("--data-path", required=True)
    t.add_argument("--dataset", required=True)
    t.add_argument("--num-items", type=int, required=True)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--epochs", type=int, default=200)
    t.add_argument("--eval-step", type=int, default=10, help="0: train only (throughput), no validation/test")
    t.add_argument("--stopping-step", type=int, default=2)
    t.add_argument("--dim", type=int, default=64)
    t.add_argument("--batch-size", type=int, default=4096)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--out", required=True)
    q = sub.add_parser("train-sasrec")
    q.add_argument("--data-path", required=True)
    q.add_argument("--dataset", required=True)
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--epochs", type=int, default=200)
    q.add_argument("--eval-step", type=int, default=5, help="0: train only (throughput), no validation/test")
    q.add_argument("--stopping-step", type=int, default=5)
    q.add_argument("--max-len", type=int, default=50)
    q.add_argument("--blocks", type=int, default=2)
    q.add_argument("--heads", type=int, default=2)
    q.add_argument("--dim", type=int, default=64)
    q.add_argument("--ffn-dim", type=int, default=256)
    q.add_argument("--dropout", type=float, default=0.5)
    q.add_argument("--batch-size", type=int, default=2048)
    q.add_argument("--lr", type=float, default=1e-3)
    q.add_argument("--out", required=True)
    args = p.parse_args(argv)
    if args.cmd == "crosscheck":
        crosscheck(args.path_in, args.path_out)
    elif args.cmd == "train-sasrec":
        train_sasrec(args)
    else:
        train(args)


if __name__ == "__main__":
    sys.exit(main())
