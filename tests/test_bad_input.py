"""Bad input, table-driven: every kind must stop with ONE line that names the problem and the fix.

Each row of ``CASES`` feeds one kind of bad input to the entry point a user would reach it through
and says, as a regex, which problem the message must name. Python entry points must raise
:class:`CrossRecError` (message ``<problem>. Fix: <fix>.`` on one line); the ``crossrec`` CLI and
the experiment runner must exit with code 2 and end stderr with ``crossrec: error: ...`` /
``crossrec experiment: error: ...``. A damaged text-embedding cache is not an error: it is rebuilt
with a warning, and that is what its row checks.

Everything runs in-process on data of a few dozen users (a subprocess costs ~25 s of imports on the
shared test machines).
"""

from __future__ import annotations

import gzip
import logging
import os
import pickle
import re
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from conftest import NetworkAccessBlocked, quiet_trainer
from crossrec_lit import CrossRecError
from crossrec_lit.config import instantiate
from crossrec_lit.data import CrossDomainDataModule, InteractionDataModule, InteractionFile, InteractionTable, Synthetic, TableSource, Vocab
from crossrec_lit.data.sources import load_amazon_p5
from crossrec_lit.data.split import cold_start_split, load_split
from crossrec_lit.evaluation import evaluate
from crossrec_lit.features import EmbeddingCache, HashingTfidfEncoder, SentenceTransformerEncoder
from crossrec_lit.models import BPRMF, EMCDR
from crossrec_lit.transfer import LoadSourceWeights

SOURCE_ARGS = dict(n_users=60, n_items=(30, 25), overlap=0.5, dim=4, interactions_per_user=(6, 5), seed=1)
_SOURCE: list[Synthetic] = []


def source() -> Synthetic:
    """Two tiny synthetic stores A and B (generated once per session)."""
    if not _SOURCE:
        _SOURCE.append(Synthetic(**SOURCE_ARGS))
    return _SOURCE[0]


def dm_b(**kwargs) -> InteractionDataModule:
    return InteractionDataModule(source(), "B", batch_size=64, **kwargs)


def cross_dm(**kwargs) -> CrossDomainDataModule:
    return CrossDomainDataModule(source(), "A", "B", batch_size=64, **kwargs)


def bpr(dm, **kwargs) -> BPRMF:
    return BPRMF(dm.num_users, dm.num_items, embedding_dim=4, **kwargs)


def frame(rows, columns=("user", "item", "domain")) -> pd.DataFrame:
    return pd.DataFrame(list(rows), columns=list(columns))


def table_source(*frames: pd.DataFrame) -> TableSource:
    return TableSource(InteractionTable(pd.concat(frames, ignore_index=True)))


def store(domain: str, users: int, items: int, per_user: int, *, prefix_u="u", prefix_i="i") -> pd.DataFrame:
    """Each user buys ``per_user`` consecutive items of a ring: every user and item recurs."""
    rows = [(f"{prefix_u}{u}", f"{prefix_i}{(u + j) % items}", domain) for u in range(users) for j in range(per_user)]
    return frame(rows)


# ====================================================================== how a case reports
@dataclass
class Env:
    tmp: Path
    monkeypatch: pytest.MonkeyPatch
    capsys: pytest.CaptureFixture
    caplog: pytest.LogCaptureFixture


@dataclass
class Outcome:
    kind: str  # "error" (CrossRecError), "cli" / "experiment" (exit code + stderr), "rebuilt"
    message: str
    rc: int | None = None
    stderr: str = ""


def error_of(fn: Callable[[], object]) -> Outcome:
    """The CrossRecError ``fn`` raises (any other exception propagates; no exception fails)."""
    try:
        fn()
    except CrossRecError as exc:
        return Outcome("error", str(exc))
    pytest.fail("no CrossRecError was raised")


def _write(env: Env, config, name: str) -> Path:
    path = env.tmp / name
    path.write_text(config if isinstance(config, str) else yaml.safe_dump(config), encoding="utf-8")
    return path


def _entry_point(env: Env, kind: str, fn: Callable[[], int]) -> Outcome:
    env.monkeypatch.chdir(env.tmp)
    env.monkeypatch.setenv("PL_GLOBAL_SEED", "0")  # seed_everything sets it; restored afterwards
    env.capsys.readouterr()
    try:
        rc = fn()
    except SystemExit as exc:  # argparse/jsonargparse exit on their own errors
        rc = exc.code
    err = env.capsys.readouterr().err
    lines = err.strip().splitlines()
    return Outcome(kind, lines[-1] if lines else "", rc, err)


def cli(env: Env, config, *, path: Path | None = None, command: str = "fit", extra: tuple[str, ...] = ()) -> Outcome:
    """``crossrec <command> --config <config> <extra>`` in-process."""
    from crossrec_lit.cli import main

    path = path or _write(env, config, "cli.yaml")
    env.monkeypatch.setattr(sys, "argv", ["crossrec"])  # as from a shell: no pytest arguments for LightningCLI to see
    # Lightning's CLI uses a jsonargparse API that jsonargparse deprecates: a library warning, not ours
    env.monkeypatch.setenv("JSONARGPARSE_DEPRECATION_WARNINGS", "off")
    return _entry_point(env, "cli", lambda: main([command, "--config", str(path), *extra]))


def not_a_checkpoint(env: Env) -> str:
    path = env.tmp / "best.ckpt"
    path.write_bytes(b"not a zip archive")
    return str(path)


def experiment(env: Env, config, *, path: Path | None = None) -> Outcome:
    """``python -m crossrec_lit.experiment --config <config> --out <tmp>/out --quiet`` in-process."""
    from crossrec_lit.experiment import main

    path = path or _write(env, config, "experiment.yaml")
    return _entry_point(env, "experiment", lambda: main(["--config", str(path), "--out", str(env.tmp / "out"), "--quiet"]))


SYNTHETIC_SPEC = {
    "class_path": "crossrec_lit.data.Synthetic",
    "init_args": {**SOURCE_ARGS, "n_items": list(SOURCE_ARGS["n_items"]), "interactions_per_user": list(SOURCE_ARGS["interactions_per_user"])},
}


def cli_config(**data_args) -> dict:
    return {
        "seed_everything": 0,
        "num_threads": int(os.environ.get("CROSSREC_NUM_THREADS", "1")),
        "trainer": {
            "max_epochs": 1, "accelerator": "cpu", "devices": 1, "logger": False, "enable_checkpointing": False,
            "enable_progress_bar": False, "enable_model_summary": False,
        },
        "model": {"class_path": "crossrec_lit.models.BPRMF", "init_args": {"embedding_dim": 4}},
        "data": {
            "class_path": "crossrec_lit.data.InteractionDataModule",
            "init_args": {"source": SYNTHETIC_SPEC, "domain": "B", "batch_size": 64, **data_args},
        },
    }


def experiment_config(**top) -> dict:
    config = {
        "name": "bad input",
        "data": {
            "class_path": "crossrec_lit.data.InteractionDataModule",
            "init_args": {"source": SYNTHETIC_SPEC, "domain": "B", "batch_size": 64, "seed": "${seed}"},
        },
        "trainer": {"max_epochs": 1},
        "models": [{"name": "BPR", "class_path": "crossrec_lit.models.BPRMF", "init_args": {"embedding_dim": 4}}],
    }
    config.update(top)
    return config


def with_model_args(config: dict, **args) -> dict:
    if "model" in config:
        config["model"]["init_args"].update(args)
    else:
        config["models"][0]["init_args"].update(args)
    return config


# ====================================================================== the cases
def csv_file(env: Env, text: str, name: str = "interactions.csv") -> str:
    path = env.tmp / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def p5_file(env: Env, payload: bytes) -> Path:
    (env.tmp / "Toys_user_sequence.txt.gz").write_bytes(payload)
    return env.tmp


def corrupt_text_cache(env: Env) -> Outcome:
    texts = ["red matte lipstick", "lego fire truck", "yoga mat", "red truck"]
    encoder = HashingTfidfEncoder(32).fit(texts)
    cache = EmbeddingCache(env.tmp / "cache")
    first = cache.get_or_encode(encoder, texts)
    path = cache.cache_path(encoder)
    path.write_bytes(b"this is not an npz file" * 4)
    with env.caplog.at_level(logging.WARNING, logger="crossrec_lit.features.cache"):
        again = EmbeddingCache(env.tmp / "cache").get_or_encode(encoder, texts)
    assert again.tobytes() == first.tobytes()  # same vectors as before the damage
    assert path.exists()  # rebuilt on disk
    assert EmbeddingCache(env.tmp / "cache")._load(path, encoder.identity, encoder.dim)[0].shape[0] == len(texts)
    return Outcome("rebuilt", env.caplog.text)


def swapped_columns_overlap(env: Env) -> Outcome:
    a = store("A", 12, 8, 4)
    # store B was read with user and item columns swapped: its "users" are item ids
    b = store("B", 12, 8, 4, prefix_u="v", prefix_i="j")
    b = b.rename(columns={"user": "item", "item": "user"})[["user", "item", "domain"]]
    return error_of(lambda: CrossDomainDataModule(table_source(a, b), "A", "B").setup("fit"))


def cold_start_without_shared_users(env: Env) -> Outcome:
    t = InteractionTable(pd.concat([store("A", 6, 5, 3), store("B", 6, 5, 3, prefix_u="w")], ignore_index=True))
    return error_of(lambda: cold_start_split(t, source="A", target="B", share=0.2))


def cold_start_share(share: float):
    def case(env: Env) -> Outcome:
        t = InteractionTable(pd.concat([store("A", 6, 5, 3), store("B", 6, 5, 3)], ignore_index=True))
        return error_of(lambda: cold_start_split(t, source="A", target="B", share=share))

    return case


def recommend(env: Env, users: Callable, k: Callable) -> Outcome:
    """``dm.recommend`` with ``users(dm)`` and ``k(dm)`` (they may depend on the data)."""
    dm = dm_b()
    return error_of(lambda: dm.recommend(bpr(dm), users(dm), k=k(dm)))


def foreign_checkpoint(env: Env) -> Outcome:
    path = env.tmp / "linear.pt"
    torch.save(torch.nn.Linear(3, 2).state_dict(), path)  # weights of an unrelated model
    dm = dm_b()
    return error_of(lambda: quiet_trainer(max_epochs=1, callbacks=[LoadSourceWeights(str(path))]).fit(bpr(dm), dm))


def corrupt_checkpoint(env: Env) -> Outcome:
    path = env.tmp / "source.ckpt"
    path.write_bytes(b"PK\x03\x04 half a zip file")
    dm = dm_b()
    return error_of(lambda: quiet_trainer(max_epochs=1, callbacks=[LoadSourceWeights(str(path))]).fit(bpr(dm), dm))


def emcdr_checkpoint(env: Env) -> Path:
    dm = cross_dm(phase="target")
    trainer = quiet_trainer(max_steps=1, limit_val_batches=0)
    trainer.fit(EMCDR(dm.num_users, dm.num_items, dm.num_source_items, embedding_dim=4), dm)
    path = env.tmp / "emcdr.ckpt"
    trainer.save_checkpoint(path)
    return path


def load_corrupt_checkpoint(env: Env) -> Outcome:
    path = env.tmp / "bad.ckpt"
    path.write_bytes(b"garbage")
    return error_of(lambda: BPRMF.load_from_checkpoint(path, weights_only=False))


def unset_placeholder(env: Env) -> Outcome:
    env.monkeypatch.delenv("NOPE", raising=False)
    config = experiment_config()
    config["data"]["init_args"]["batch_size"] = "${NOPE}"
    return experiment(env, config)


def missing_text_package(env: Env) -> Outcome:
    env.monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # import fails, find_spec says absent
    return error_of(lambda: SentenceTransformerEncoder())


def text_model_without_package(env: Env) -> Outcome:
    from crossrec_lit.models.text import TextTwoTower

    env.monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    dm = cross_dm()
    model = TextTwoTower(dm.num_users, dm.num_items, dm.num_source_items, embedding_dim=4, encoder="minilm", text_cache=str(env.tmp))
    return error_of(lambda: quiet_trainer(max_steps=1, limit_val_batches=0).fit(model, dm))


class NaNScores(BPRMF):
    """A model whose scores went NaN (e.g. after a diverged update)."""

    def full_scores(self, users):
        scores = super().full_scores(users).clone()
        scores[:, 1] = float("nan")
        return scores


def nan_scores(env: Env) -> Outcome:
    dm = dm_b()
    model = NaNScores(dm.num_users, dm.num_items, embedding_dim=4)
    return error_of(lambda: evaluate(model, dm.eval_batches("test")))


def single_domain_model_in_joint_phase(env: Env) -> Outcome:
    dm = cross_dm(phase="both")
    return error_of(lambda: quiet_trainer(max_steps=1, limit_val_batches=0).fit(bpr(dm), dm))


def mapping_model_in_source_phase(env: Env) -> Outcome:
    dm = cross_dm(phase="source")
    model = EMCDR(dm.num_users, dm.num_items, dm.num_source_items, embedding_dim=4)
    return error_of(lambda: quiet_trainer(max_steps=1, limit_val_batches=0).fit(model, dm))


def case(fn, pattern: str, id: str, *marks) -> object:
    return pytest.param(fn, pattern, id=id, marks=marks)


CASES = [
    # ---------------------------------------------------------------- tables and files
    case(lambda e: error_of(lambda: InteractionTable.from_frame(frame([("u", "i")], ("customer", "item")), domain="D")),
         r"missing column\(s\) \['user'\]", "missing-column-in-frame"),
    case(lambda e: error_of(lambda: InteractionFile(csv_file(e, "user,rating\nu1,5\n"), rating_col="rating", domain="D").load()),
         r"has no column\(s\) \['item'\]", "missing-column-in-file"),
    case(lambda e: error_of(lambda: InteractionTable(frame([("u", "i", "D", 3.5)], ("user", "item", "domain", "price")))),
         r"unexpected column\(s\) \['price'\]", "extra-column"),
    case(lambda e: error_of(lambda: InteractionFile(csv_file(e, "user;item\nu1;i1\n"), domain="D").load()),
         r"has no column\(s\) \['user', 'item'\] when split at ','; its header 'user;item' splits at ';'", "csv-with-semicolons"),
    case(lambda e: error_of(lambda: InteractionFile(csv_file(e, "user,item,stars\nu1,i1,5\nu1,i2,five\n"), rating_col="stars", domain="D").load()),
         r"column 'rating' is not numeric \(e\.g\. \['five'\]\)", "non-numeric-rating"),
    case(lambda e: error_of(lambda: InteractionFile(csv_file(e, "user,item,ts\nu1,i1,1600000000\nu1,i2,2020-01-01\n"), timestamp_col="ts", domain="D").load()),
         r"column 'timestamp' holds neither numbers nor ISO 8601 dates throughout \(e\.g\. \['2020-01-01'\]\)", "numbers-and-dates-mixed-timestamp"),
    case(lambda e: error_of(lambda: InteractionFile(csv_file(e, "user,item,ts\nu1,i1,01/02/2020\nu1,i2,01/03/2020\n"), timestamp_col="ts", domain="D").load()),
         r"neither numbers nor ISO 8601 dates throughout \(e\.g\. \['01/02/2020', '01/03/2020'\]\)", "ambiguous-date-timestamp"),
    case(lambda e: error_of(lambda: InteractionFile(csv_file(e, "user,item,r\nu1,i1,4\nu1,i2,NaN\n"), rating_col="r", domain="D").load()),
         r"ratings contain NaN or infinite values", "nan-rating"),
    case(lambda e: error_of(lambda: InteractionTable.from_frame(frame([("u", "i", np.inf)], ("user", "item", "r")), rating_col="r", domain="D")),
         r"ratings contain NaN or infinite values", "infinite-rating"),
    case(lambda e: error_of(lambda: InteractionDataModule(table_source(store("B", 5, 4, 3), store("B", 1, 4, 2)), "B", dedupe="error").setup("fit")),
         r"\d+ duplicate \(domain, user, item\) rows, e\.g\. \[\{'domain': 'B', 'user': 'u0'", "duplicate-rows-dedupe-error"),
    case(lambda e: error_of(lambda: InteractionFile(csv_file(e, ""), domain="D").load()),
         r"interaction file .*interactions\.csv is empty \(0 bytes\)", "empty-file"),
    case(lambda e: error_of(lambda: InteractionFile(csv_file(e, "user,item\n"), domain="D").load()),
         r"interactions\.csv has column names but no rows", "header-only-file"),
    case(lambda e: error_of(lambda: InteractionDataModule(InteractionFile(str(e.tmp / "no_such.csv"), domain="B"), "B").setup("fit")),
         r"interaction file .*no_such\.csv does not exist", "missing-data-file"),
    case(lambda e: error_of(lambda: load_amazon_p5(p5_file(e, b"\x1f\x8b\x08\x00 this is not deflate data at all"), "Toys")),
         r"Toys_user_sequence\.txt\.gz is a damaged or truncated gzip file", "corrupt-gz"),
    case(lambda e: error_of(lambda: load_amazon_p5(p5_file(e, gzip.compress(b"u1 a b c\n" * 200)[:-25]), "Toys")),
         r"Toys_user_sequence\.txt\.gz is a damaged or truncated gzip file", "truncated-gz"),
    case(corrupt_text_cache, r"embedding cache .*\.npz is corrupt \(unreadable .*\); deleting it and re-encoding", "corrupt-text-cache-is-rebuilt"),
    # ---------------------------------------------------------------- preprocessing and splits
    case(lambda e: error_of(lambda: dm_b(k_core=50).setup("fit")),
         r"k-core filtering \(k_user=50, k_item=50\) left domain\(s\) \['B'\] empty", "empty-domain-after-k-core"),
    case(swapped_columns_overlap, r"this cross-domain DataModule needs users shared by 'A' and 'B' but found 0", "zero-overlap-swapped-columns"),
    case(cold_start_without_shared_users, r"a cold-start split needs users shared by 'A' and 'B' but found 0", "cold-start-no-shared-users"),
    case(cold_start_share(0.0), r"cold-start share must be strictly between 0 and 1, got 0\.0", "cold-start-share-0"),
    case(cold_start_share(1.0), r"cold-start share must be strictly between 0 and 1, got 1\.0", "cold-start-share-1"),
    case(lambda e: error_of(lambda: InteractionDataModule(source(), "Toyz").setup("fit")),
         r"unknown domain\(s\) \['Toyz'\]; the data has \['A', 'B'\]", "unknown-domain"),
    case(lambda e: error_of(lambda: dm_b(split="random")),
         r"unknown split 'random'", "unknown-split"),
    case(lambda e: error_of(lambda: cross_dm(phase="pretrain")),
         r"unknown phase 'pretrain'", "unknown-phase"),
    case(lambda e: error_of(lambda: dm_b().eval_batches("train")),
         r"unknown evaluation part 'train'", "unknown-evaluation-part"),
    case(lambda e: error_of(lambda: dm_b(dedupe="maybe").setup("fit")),
         r"unknown dedupe policy 'maybe'", "unknown-dedupe-policy"),
    case(lambda e: error_of(lambda: dm_b(split="file", split_file=str(e.tmp / "split.csv"))),
         r"split file .*split\.csv does not exist", "missing-split-file"),
    case(lambda e: error_of(lambda: load_split(e.tmp / "split.csv.gz")),
         r"split file .*split\.csv\.gz does not exist", "missing-split-file-load_split"),
    case(lambda e: error_of(lambda: InteractionDataModule(source(), "B", batch_size=0)),
         r"batch_size must be >= 1, got 0", "batch-size-0"),
    # ---------------------------------------------------------------- ids and K at inference
    case(lambda e: recommend(e, lambda dm: ["nobody"], lambda dm: 3), r"1 unknown user\(s\), e\.g\. \['nobody'\]", "unknown-user-at-inference"),
    case(lambda e: error_of(lambda: Vocab(["i1", "i2"]).encode(["i1", "i9"], what="item")),
         r"1 unknown item\(s\), e\.g\. \['i9'\]", "unknown-item-id"),
    case(lambda e: recommend(e, lambda dm: dm.user_vocab.ids[:2], lambda dm: dm.num_items + 1),
         r"K=(\d+) is larger than the catalogue of \d+ items", "k-larger-than-catalogue"),
    case(lambda e: recommend(e, lambda dm: dm.user_vocab.ids[:2], lambda dm: 0), r"K must be a positive integer, got 0", "k-zero"),
    case(lambda e: error_of(lambda: BPRMF(10, 20, ks=(10, -5))), r"K must be a positive integer, got -5", "k-negative-cutoff"),
    # ---------------------------------------------------------------- models, optimisers, training
    case(lambda e: error_of(lambda: BPRMF(10, 20, lr=-0.01)), r"learning rate must be > 0, got -0\.01", "negative-lr"),
    case(lambda e: error_of(lambda: BPRMF(10, 20, optimizer="adamax")), r"unknown optimizer 'adamax'", "unknown-optimizer"),
    case(lambda e: error_of(lambda: EMCDR(10, 20, 20, embedding_dim=4, optimizer="sparse_adam").configure_optimizers()),
         r"optimizer='sparse_adam' applies to embedding-only models; EMCDR has dense parameters", "sparse-adam-with-dense-layers"),
    case(single_domain_model_in_joint_phase, r"a single-domain model got a batch with parts \['source', 'target'\]", "single-domain-model-in-phase-both"),
    case(mapping_model_in_source_phase, r"EMCDR does not train on source batches", "mapping-model-in-phase-source"),
    case(nan_scores, r"the model produced NaN scores", "nan-scores-in-evaluation"),
    case(foreign_checkpoint, r"no weight of linear\.pt matches BPRMF", "checkpoint-of-another-model"),
    case(corrupt_checkpoint, r"source checkpoint .*source\.ckpt is unreadable", "corrupt-checkpoint"),
    case(missing_text_package, r"text encoding needs sentence_transformers.* which is not installed", "missing-text-package"),
    case(text_model_without_package, r"text encoding needs sentence_transformers.* which is not installed", "missing-text-package-text-model"),
    # ---------------------------------------------------------------- configs
    case(lambda e: error_of(lambda: instantiate({"class_path": "crossrec_lit.models.BPRMF", "init_args": {"num_users": 5, "num_items": 20, "embeding_dim": 8}})),
         r"unknown key\(s\) \['embeding_dim'\] for BPRMF", "unknown-init-arg-instantiate"),
    case(lambda e: experiment(e, experiment_config(colour="red")), r"experiment\.yaml: unknown key\(s\) \['colour'\]", "experiment-unknown-key"),
    case(lambda e: experiment(e, with_model_args(experiment_config(), embeding_dim=8)),
         r"unknown key\(s\) \['embeding_dim'\] for BPRMF", "experiment-unknown-init-arg"),
    case(unset_placeholder, r"config uses \$\{NOPE\} but it is not set", "experiment-unset-env-placeholder"),
    case(lambda e: experiment(e, "models: [unclosed\n  name: x\n"), r"experiment\.yaml is not valid YAML", "experiment-invalid-yaml"),
    case(lambda e: experiment(e, None, path=e.tmp / "missing.yaml"), r"config file .*missing\.yaml does not exist", "experiment-missing-config"),
    case(lambda e: experiment(e, experiment_config(data={"class_path": "crossrec_lit.data.InteractionDataModule", "init_args": {"source": SYNTHETIC_SPEC, "domain": "Toyz"}})),
         r"unknown domain\(s\) \['Toyz'\]", "experiment-unknown-domain"),
    case(lambda e: cli(e, cli_config(domain="Toyz")), r"unknown domain\(s\) \['Toyz'\]; the data has \['A', 'B'\]", "cli-unknown-domain"),
    case(lambda e: cli(e, cli_config(source={"class_path": "crossrec_lit.data.InteractionFile", "init_args": {"path": "no_such.csv", "domain": "B"}})),
         r"interaction file no_such\.csv does not exist", "cli-missing-data-file"),
    case(lambda e: cli(e, with_model_args(cli_config(), embeding_dim=8)), r"Option 'embeding_dim' is not accepted", "cli-unknown-init-arg"),
    case(lambda e: cli(e, "model: [unclosed\n  name: x\n"), r"the config is not valid YAML", "cli-invalid-yaml"),
    case(lambda e: cli(e, None, path=e.tmp / "missing.yaml"), r"File does not exist: .*missing\.yaml", "cli-missing-config"),
    case(lambda e: cli(e, cli_config(split="random")), r"unknown split 'random'", "cli-unknown-split"),
    case(lambda e: cli(e, with_model_args(cli_config(), lr=-1.0)), r"learning rate must be > 0", "cli-negative-lr"),
    case(lambda e: cli(e, cli_config(), command="test", extra=("--ckpt_path", "no_such.ckpt")), r"checkpoint no_such\.ckpt does not exist", "cli-missing-checkpoint"),
    case(lambda e: cli(e, cli_config(), command="test", extra=(f"--ckpt_path={not_a_checkpoint(e)}",)), r"checkpoint .*best\.ckpt is unreadable \(truncated, or not", "cli-corrupt-checkpoint"),
    case(lambda e: cli(e, cli_config(), command="test", extra=("--ckpt_path", "best")),
         r"ckpt_path 'best' names the best checkpoint of a fit in the same process, and `crossrec test` starts a new one", "cli-best-outside-fit"),
    case(lambda e: cli(e, {**cli_config(), "ckpt_path": "no_such.ckpt"}, command="test"), r"checkpoint no_such\.ckpt does not exist", "cli-missing-checkpoint-in-config"),
    case(lambda e: cli(e, experiment_config()), r"cli\.yaml is an experiment config \(a models: list\), not one for `crossrec fit`", "cli-given-an-experiment-config"),
    case(lambda e: experiment(e, cli_config()), r"experiment\.yaml is a `crossrec fit` config \(one model:, no models: list\)", "experiment-given-a-fit-config"),
    case(lambda e: experiment(e, experiment_config(data=SYNTHETIC_SPEC)), r"data's class_path 'crossrec_lit\.data\.Synthetic' is not one of the package's DataModules", "experiment-data-source-for-datamodule"),
    case(lambda e: error_of(lambda: BPRMF.load_from_checkpoint(emcdr_checkpoint(e), weights_only=False)),
         r"checkpoint .* was saved by another model", "load-checkpoint-of-another-model"),
    case(load_corrupt_checkpoint, r"checkpoint .* is unreadable", "load-corrupt-checkpoint"),
]

PREFIX = {"cli": "crossrec: error: ", "experiment": "crossrec experiment: error: "}


@pytest.mark.parametrize("trigger, pattern", CASES)
def test_bad_input_stops_with_one_clear_line(trigger, pattern, tmp_path, monkeypatch, capsys, caplog):
    outcome = trigger(Env(tmp_path, monkeypatch, capsys, caplog))
    if outcome.kind == "rebuilt":
        # not an error: the cache is deleted and rebuilt, and a warning names the file and why
        assert re.search(pattern, outcome.message), outcome.message
        return
    if outcome.kind in PREFIX:
        assert outcome.rc == 2, f"exit code {outcome.rc}; stderr ends with: {outcome.stderr[-1500:]}"
        assert outcome.message.startswith(PREFIX[outcome.kind]), f"last stderr line: {outcome.message!r}"
        assert outcome.stderr.count(PREFIX[outcome.kind].strip()) == 1, outcome.stderr[-1500:]
    message = outcome.message
    assert "\n" not in message and "\r" not in message, message
    assert "Fix:" in message, message
    problem = message.split("Fix:", 1)[0]
    assert re.search(pattern, problem), f"{pattern!r} not found in the problem part of {message!r}"
    assert message.split("Fix:", 1)[1].strip(" ."), f"empty fix in {message!r}"


def test_the_table_covers_at_least_30_kinds():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    assert len([c for c in CASES if not c.marks]) >= 30


# ====================================================================== the network guard (conftest)
def test_network_is_blocked_but_loopback_and_unix_sockets_work(tmp_path):
    # a non-loopback address is refused before any packet leaves
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(3)
        with pytest.raises(NetworkAccessBlocked, match=r"network access is blocked in tests: connect to \('10\.255\.255\.1', 9\)"):
            s.connect(("10.255.255.1", 9))
        with pytest.raises(NetworkAccessBlocked):
            s.connect_ex(("10.255.255.1", 9))
    with pytest.raises(NetworkAccessBlocked, match="create_connection"):
        socket.create_connection(("10.255.255.1", 9), timeout=3)
    with pytest.raises(NetworkAccessBlocked, match="getaddrinfo for 'example.com'"):
        socket.getaddrinfo("example.com", 443)
    with pytest.raises(OSError):  # what offline-aware code catches
        socket.create_connection(("pypi.org", 443), timeout=3)

    # loopback keeps working: a local listening socket, by address and by name
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        for host in ("127.0.0.1", "localhost"):
            with socket.create_connection((host, port), timeout=5) as client:
                conn, _ = server.accept()
                with conn:
                    client.sendall(b"ping")
                    assert conn.recv(4) == b"ping"
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as client:
            client.settimeout(5)
            assert client.connect_ex(("127.0.0.1", port)) == 0
            server.accept()[0].close()
    assert socket.getaddrinfo("localhost", 80)

    # IPv6 loopback, where the machine has it
    if socket.has_ipv6:
        try:
            server6 = socket.create_server(("::1", 0), family=socket.AF_INET6)
        except OSError:
            server6 = None
        if server6 is not None:
            with server6, socket.create_connection(("::1", server6.getsockname()[1]), timeout=5):
                server6.accept()[0].close()

    # AF_UNIX sockets are local by construction
    a, b = socket.socketpair()
    with a, b:
        a.sendall(b"x")
        assert b.recv(1) == b"x"
    if hasattr(socket, "AF_UNIX"):
        path = str(tmp_path / "s.sock")
        with socket.socket(socket.AF_UNIX) as server:
            server.bind(path)
            server.listen(1)
            with socket.socket(socket.AF_UNIX) as client:
                client.connect(path)
                server.accept()[0].close()
