"""The ``crossrec`` command: LightningCLI for single runs, plus the multi-seed experiment runner.

``crossrec fit|validate|test --config configs/x.yaml`` is Lightning's own CLI with the data-derived
sizes (number of users and items) linked from the DataModule into the model, as in Lightning's
transfer-learning template. ``crossrec experiment ...`` forwards to
:mod:`crossrec_lit.experiment`.
"""

from __future__ import annotations

import sys

from pytorch_lightning.cli import LightningCLI

from crossrec_lit.data.datamodule import InteractionDataModule
from crossrec_lit.errors import CrossRecError
from crossrec_lit.models.base import RecommenderModule
from crossrec_lit.runtime import set_num_threads, threads_from_env


class CrossRecCLI(LightningCLI):
    """LightningCLI with the DataModule's sizes linked into the model and a thread-count option."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--num_threads", type=int | None, default=None, help="torch intra-op threads (default: CROSSREC_NUM_THREADS or torch's)")
        # apply_on="instantiate": the sizes are only known once the DataModule has read its data
        parser.link_arguments("data.num_users", "model.init_args.num_users", apply_on="instantiate")
        parser.link_arguments("data.num_items", "model.init_args.num_items", apply_on="instantiate")
        # cross-domain models also take the source catalogue size; jsonargparse skips this link for
        # models and DataModules without these names
        parser.link_arguments("data.num_source_items", "model.init_args.num_source_items", apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        set_num_threads(config.get("num_threads") or threads_from_env())


def main(args: list[str] | None = None) -> int:
    argv = sys.argv[1:] if args is None else list(args)
    if argv[:1] == ["experiment"]:
        from crossrec_lit.experiment import main as experiment_main

        return experiment_main(argv[1:])
    try:
        CrossRecCLI(
            RecommenderModule,
            InteractionDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            args=None if args is None else argv,
            save_config_kwargs={"overwrite": True},
            auto_configure_optimizers=False,
        )
    except CrossRecError as exc:
        print(f"crossrec: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
