"""``python train.py``: the command line over :func:`lotterynet.run.run`.

``main(argv)`` returns the exit code: 0 on success, 2 on bad input (one line on stderr naming
the bad value and the valid choices, no traceback).
"""

from __future__ import annotations

import argparse
import sys

from .checkpointing import CheckpointError, load_checkpoint
from .config import FIELDS, ConfigError, add_config_arguments, load_yaml, make_config
from .data import DatasetNotFound
from .sweep import add_sweep_arguments, is_sweep, run_sweep

# What a resumed run takes from the flags, not from the checkpoint's stored config.
NOT_RESUMED = ("resume", "stop_after", "overwrite")


class OneLineParser(argparse.ArgumentParser):
    """Argument errors as one line (no usage block), exit code 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="train.py",
        description="Edge-popup training of score masks over frozen random weights (or the "
                    "trained dense baseline), with checkpoints, results.json, CSV and W&B logs.")
    parser.add_argument("--config", metavar="FILE.yaml", default=None,
                        help="YAML file of options (keys as the flags, with _ or -); flags given "
                             "on the command line override it (default: none)")
    add_config_arguments(parser)
    add_sweep_arguments(parser)
    return parser


def config_from_args(args: argparse.Namespace):
    """Checkpoint's config (when resuming) < YAML file < flags given on the command line."""
    values: dict = {}
    if args.resume:
        stored = load_checkpoint(args.resume)["hyper_parameters"].get("config", {})
        values.update({k: v for k, v in stored.items() if k not in NOT_RESUMED})
    if args.config:
        values.update(load_yaml(args.config))
    values.update({k: v for k, v in vars(args).items() if k in FIELDS and v is not None})
    return make_config(values)


def summary_line(results: dict) -> str:
    if not results.get("finished"):
        return (f"stopped after epoch {results['epochs_done']}; resume with --resume "
                f"{results['run_dir']}/checkpoints/last.ckpt")
    params = results["params"]
    size = (f"kept {params['kept']:,} of {params['maskable']:,} maskable" if params["maskable"]
            else f"{params['trainable']:,} trained weights")
    return (f"test accuracy {100 * results['test_acc']:.2f}% | {size} | "
            f"{results['train_seconds']:.0f} s ({results['epochs_done']} epochs) | "
            f"{results['run_dir']}")


def main(argv: list[str] | None = None) -> int:
    from .run import is_launched_worker, run  # heavy imports after --help / argument errors

    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # --help (0) or an argument error (2, already printed)
        return int(exit_.code or 0)
    try:
        if is_sweep(args):
            overrides = load_yaml(args.config) if args.config else {}
            overrides.update({k: v for k, v in vars(args).items()
                              if k in FIELDS and v is not None})
            return run_sweep(args, overrides)
        config = config_from_args(args)
        results = run(config)
    except (ConfigError, CheckpointError, DatasetNotFound) as err:
        print(f"train.py: error: {err}", file=sys.stderr)
        return 2
    if not is_launched_worker():
        print(summary_line(results), flush=True)
    return 0
