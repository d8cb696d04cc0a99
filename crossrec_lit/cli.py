"""The ``crossrec`` command: LightningCLI for single runs, plus the multi-seed experiment runner.

``crossrec fit|validate|test --config configs/x.yaml`` is Lightning's own CLI with the data-derived
sizes (number of users and items) linked from the DataModule into the model, as in Lightning's
transfer-learning template. ``crossrec experiment ...`` forwards to
:mod:`crossrec_lit.experiment`, ``crossrec recommend ...`` (top-k lists from an experiment's chosen
model) to :mod:`crossrec_lit.recommend`.
"""

from __future__ import annotations

import sys

from jsonargparse import ArgumentError
from pytorch_lightning.cli import LightningCLI

from crossrec_lit.data.datamodule import InteractionDataModule
from crossrec_lit.errors import CrossRecError
from crossrec_lit.models.base import RecommenderModule
from crossrec_lit.runtime import set_num_threads, threads_from_env


class CrossRecCLI(LightningCLI):
    """LightningCLI with the DataModule's sizes linked into the model and a thread-count option."""

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        # no `predict`: the models rank whole catalogues, and ranked lists with ids come from
        # `crossrec recommend` (see USAGE), not from per-batch predictions
        return {name: skip for name, skip in LightningCLI.subcommands().items() if name != "predict"}

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--num_threads", type=int | None, default=None, help="torch intra-op threads (default: CROSSREC_NUM_THREADS or torch's)")
        # apply_on="instantiate": the sizes are only known once the DataModule has read its data
        parser.link_arguments("data.num_users", "model.init_args.num_users", apply_on="instantiate")
        parser.link_arguments("data.num_items", "model.init_args.num_items", apply_on="instantiate")
        # cross-domain models also take the source catalogue size; jsonargparse skips this link for
        # models and DataModules without these names
        parser.link_arguments("data.num_source_items", "model.init_args.num_source_items", apply_on="instantiate")

    def parse_arguments(self, parser, args) -> None:
        super().parse_arguments(parser, args)
        # checked once parsed, so a ckpt_path written in a config file is covered as well as
        # --ckpt_path, and before LightningCLI itself opens the file to read its hyperparameters
        subcommand = self.config.get("subcommand")
        config = self.config[subcommand] if subcommand else {}
        path = config.get("ckpt_path")
        if path == "best" and subcommand != "fit":
            # Lightning keeps the best checkpoint's path in the memory of the process that fitted;
            # a new process has none, and Lightning's own message blames the ModelCheckpoint config
            raise CrossRecError(
                f"ckpt_path 'best' names the best checkpoint of a fit in the same process, and `crossrec {subcommand}` starts a new one",
                f"pass the file the fit wrote{_checkpoint_hint(config)}",
            )
        problem = _checkpoint_problem(path)
        if problem:
            raise CrossRecError(problem, f"pass the checkpoint file a fit wrote{_checkpoint_hint(config)}")

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        set_num_threads(config.get("num_threads") or threads_from_env())


USAGE = """usage: crossrec <command> [options]     (crossrec <command> --help for a command's options)

commands:
  fit, validate, test   one model on one DataModule from a YAML config (Lightning's CLI)
  experiment            several models and seeds: search on validation, test once, paired tests
  recommend             top-k lists of the model an experiment tested, for your customers

  crossrec fit --config configs/mf_synthetic.yaml
  crossrec experiment --config configs/toys_mf.yaml --seeds 3 --out runs/toys_mf
  crossrec recommend --config configs/toys_mf.yaml --out runs/toys_mf --model BPR-MF --output recs.csv
"""


def main(args: list[str] | None = None) -> int:
    argv = sys.argv[1:] if args is None else list(args)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, end="", file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    if argv[0] == "predict":
        print("crossrec: error: there is no `crossrec predict`. Fix: write ranked lists with `crossrec recommend --config <experiment config> --out <its output folder> --model <name>`, "
              "or call DataModule.recommend(model, user_ids) from Python.", file=sys.stderr)
        return 2
    if argv[:1] == ["experiment"]:
        from crossrec_lit.experiment import main as experiment_main

        return experiment_main(argv[1:], prog="crossrec experiment")
    if argv[:1] == ["recommend"]:
        from crossrec_lit.recommend import main as recommend_main

        return recommend_main(argv[1:], prog="crossrec recommend")
    experiment_config = next((path for path in _option_values(argv, "--config", "-c") if _is_experiment_config(path)), None)
    if experiment_config is not None:
        print(
            f"crossrec: error: {experiment_config} is an experiment config (a models: list), not one for `crossrec fit`, `validate` or `test`. "
            f"Fix: run it with `crossrec experiment --config {experiment_config} --seeds 3 --out runs/<name>`, or give fit one model: (see configs/mf_synthetic.yaml).",
            file=sys.stderr,
        )
        return 2
    try:
        CrossRecCLI(
            RecommenderModule,
            InteractionDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            args=None if args is None else argv,
            save_config_kwargs={"overwrite": True},
            auto_configure_optimizers=False,
            # raise instead of printing the usage text and exiting, so errors end as one line
            parser_kwargs={"exit_on_error": False},
        )
    except CrossRecError as exc:
        print(f"crossrec: error: {exc}", file=sys.stderr)
        return 2
    except (ArgumentError, ValueError, TypeError) as exc:
        print(f"crossrec: error: {one_line(exc)}", file=sys.stderr)
        return 2
    return 0


def _option_values(argv: list[str], *names: str) -> list[str]:
    """The values given to the options ``names`` (``--name value`` or ``--name=value``)."""
    values = []
    for i, arg in enumerate(argv):
        if arg in names and i + 1 < len(argv):
            values.append(argv[i + 1])
        elif any(arg.startswith(f"{name}=") for name in names if name.startswith("--")):
            values.append(arg.split("=", 1)[1])
    return values


def _checkpoint_problem(path: str | None) -> str | None:
    """What is wrong with a ``ckpt_path`` file, if anything. Why here: Lightning reports a missing
    or damaged checkpoint with a traceback from deep inside ``torch.load`` after the data are read;
    a checkpoint torch writes is a zip archive, so a file that is not one is not a checkpoint."""
    import zipfile
    from pathlib import Path

    if path is None or path in ("best", "last", "hpc", "registry") or "://" in path:  # Lightning's own names and remote paths
        return None
    file = Path(path)
    if not file.is_file():
        return f"checkpoint {path} does not exist"
    if not zipfile.is_zipfile(file):
        return f"checkpoint {path} is unreadable (truncated, or not a checkpoint torch wrote)"
    return None


def _checkpoint_hint(config) -> str:
    """Where the checkpoint to pass lies, as the end of a fix: the newest file in the folder the
    config's ModelCheckpoint writes to, else where Lightning writes by default."""
    from pathlib import Path

    callbacks = (config.get("trainer") or {}).get("callbacks") or []
    for callback in callbacks if isinstance(callbacks, list) else [callbacks]:
        args = getattr(callback, "init_args", None) or (callback.get("init_args") if isinstance(callback, dict) else None) or {}
        folder = args.get("dirpath")
        if folder:
            found = sorted(Path(folder).glob("*.ckpt"), key=lambda p: p.stat().st_mtime)
            return f", e.g. {found[-1]}" if found else f" (this config's ModelCheckpoint writes to {folder})"
    return " (under the trainer's default_root_dir: <logger>/version_<n>/checkpoints/)"


def _is_experiment_config(path: str) -> bool:
    """Whether ``path`` holds the runner's layout; unreadable files are left to LightningCLI's own
    messages. Why ask: jsonargparse reads such a file key by key and fails on whichever argument
    it reaches first (e.g. ``seed: ${seed}``), which does not say the command is the wrong one."""
    import yaml

    try:
        with open(path, encoding="utf-8") as handle:
            raw = yaml.safe_load(handle)
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(raw, dict) and isinstance(raw.get("models"), list) and "model" not in raw


def one_line(exc: BaseException) -> str:
    """jsonargparse's multi-line validation errors, reduced to the line that says what is wrong.

    A CrossRecError raised by one of our constructors travels inside jsonargparse's message; its
    text (with the fix) is what the user needs. Otherwise the most specific line (an unknown
    option, a missing file, a YAML error) is kept with the key it concerns, and the fix points at
    the CLI's own help.
    """
    lines = [line.strip().lstrip("- ").strip() for line in str(exc).splitlines() if line.strip()]
    ours = [line for line in lines if "Fix:" in line]
    if ours:
        line = ours[0]
        return line.split(": ", 1)[1] if line.startswith("Problem with given class_path") and ": " in line else line
    noise = ("Does not validate against", "Subtypes:", "Errors:", "Given value", "Expected a <class 'NoneType'>")
    useful = [line for line in lines if not line.startswith(noise)]
    where = lines[0].rstrip(":") if lines and lines[0].startswith("Parser key") else ""
    detail = next((line for line in useful if line != lines[0]), useful[0] if useful else type(exc).__name__)
    if detail.startswith("Problem with given class_path"):
        following = useful[useful.index(detail) + 1 :]
        detail = f"{detail.rstrip(':')}: {following[0]}" if following else detail
    message = f"{where}: {detail}" if where and detail != lines[0] else (lines[0] if lines else detail)
    if message.startswith("Problems parsing config"):
        message = f"the config is not valid YAML ({message.split(':', 1)[1].strip()})"
    return f"{message.rstrip('.')}. Fix: check the config against `crossrec fit --help` (or `--print_config`)."


if __name__ == "__main__":
    sys.exit(main())
