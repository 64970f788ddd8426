"""The trained target networks of the approximation experiments, each trained through the
project's training stack (:func:`lotterynet.run.run` with ``train_weights=True``) with its
paper's own recipe, and cached: a target whose run directory already holds a finished run is
loaded from its checkpoint, never retrained.

* ``pensia_fc2`` — Pensia et al. (2020), Experiment 1 / Sec. 5: FC2 784-500-10 without bias
  (its 397,000 weights), SGD lr 0.1, momentum 0.9, weight decay 5e-4, cosine annealing, batch
  64, 10 epochs; the paper reports 97.19 % test accuracy. (Sec. 5 gives momentum, weight decay,
  schedule and batch for all its training; lr 0.1 for 10 epochs is Experiment 2's for its dense
  FC baselines: Experiment 1 names no lr or epochs for its target.)
* ``dacunha_lenet5_<dataset>`` — da Cunha et al. (2022), Sec. 3: their LeNet5
  (``archs.lenet5_dacunha``: biases, 7 × 7 × 16 conv output), Adam lr 1e-3, β = (0.9, 0.999),
  batch 64, 50 epochs; 98.99 % (MNIST) / 89.12 % (Fashion-MNIST).

Both train on the whole 60k training split (``val_size=0``) and report the 10k test split.

    python -m lotterynet.targets pensia_fc2 dacunha_lenet5_mnist --data-dir ../shared/data
"""

from __future__ import annotations

if __name__ == "__main__":  # (Ctrl-C and SIGTERM in the imports: one line, as later)
    from lotterynet.process_lifetime import hold_stops

    hold_stops()

import argparse
import dataclasses
import json
import shutil
from functools import partial
from pathlib import Path

from torch import nn

from .checkpointing import CHECKPOINTS, LAST, epochs_done, load_checkpoint, stored_config
from .config import RESUMABLE, changed_fields, make_config
from .config_checks import check_path
from .errors import (
    REPORTED,
    CheckpointError,
    ConfigError,
    Interrupted,
    OneLineErrorParser,
    OutOfMemory,
    encodable_output,
    exit_code,
    message,
    stopped,
)
from .memory import DoesNotFit
from .models import build_model
from .path_checks import check_output_dir
from .process_lifetime import stopping_on_sigterm
from .run import check_same_run, run
from .run_dir import RESULTS, holds_files, left_before_a_checkpoint, read_json, results_differ
from .run_stops import reporting_write_failure, run_again
from .sweep_jobs import goes_on_by, going_on, run_again_to_go_on
from .ticket_frozen import tensors_digest

PENSIA_SGD = dict(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4,
                  scheduler="cosine", batch_size=64, epochs=10)
DACUNHA_ADAM = dict(optimizer="adam", lr=1e-3, momentum=0.9, weight_decay=0.0,
                    scheduler="constant", batch_size=64, epochs=50)

RECIPES = {
    "pensia_fc2": dict(arch="fc2", dataset="mnist", **PENSIA_SGD),
    "dacunha_lenet5_mnist": dict(arch="lenet5_dacunha", dataset="mnist", **DACUNHA_ADAM),
    "dacunha_lenet5_fashion-mnist": dict(arch="lenet5_dacunha", dataset="fashion-mnist",
                                         **DACUNHA_ADAM),
}
PAPER_ACCURACY = {"pensia_fc2": 0.9719, "dacunha_lenet5_mnist": 0.9899,
                  "dacunha_lenet5_fashion-mnist": 0.8912}
TARGETS_DIR = Path("runs/targets")


def target_config(name: str, *, data_dir=None, out: Path | None = None,
                  targets_dir: Path = TARGETS_DIR, **overrides):
    """The validated RunConfig of recipe ``name`` (``overrides``: e.g. fewer epochs for a test;
    any deviation from the paper's recipe is recorded in the run's results), run in ``out``,
    by default a folder of ``targets_dir`` named by the recipe, its epochs and seed."""
    recipe = {**RECIPES[name], **overrides}
    out = out or Path(targets_dir) / f"{name}-e{recipe['epochs']}-seed{recipe.get('seed', 0)}"
    data_dir = None if data_dir is None else str(data_dir)
    return make_config({**recipe, "train_weights": True, "val_size": 0, "data_dir": data_dir,
                        "out": str(out), "progress_bar": False})


def load_target(run_dir: Path) -> tuple[nn.Module, dict]:
    """The trained model of a finished run (rebuilt from the spec stored in its checkpoint,
    whose digest is checked) and the run's ``results.json``; a damaged one is a
    :class:`CheckpointError` naming the file."""
    path = Path(run_dir) / CHECKPOINTS / LAST
    if not path.is_file():  # (results/approximation_targets/ keeps the results only)
        raise CheckpointError(f"target folder {str(run_dir)!r} holds a finished run's results "
                              f"but not its checkpoint {str(path)!r}, which the target is "
                              f"loaded from; delete {str(run_dir)!r} to train it again")
    ckpt = load_checkpoint(path)
    try:
        model = build_model(**ckpt["hyper_parameters"]["spec"])
        model.load_state_dict({k.removeprefix("model."): v for k, v in ckpt["state_dict"].items()
                               if k.startswith("model.")})
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"checkpoint {str(path)!r} does not hold a target network "
                              f"({type(err).__name__}: {err}); delete {str(run_dir)!r} to "
                              f"train it again") from None
    results = read_json(Path(run_dir) / RESULTS)
    if not isinstance(results.get("test_acc"), float):
        raise CheckpointError(f"{str(Path(run_dir) / RESULTS)!r} is not a finished run's "
                              f"results; delete {str(run_dir)!r} to train the target again")
    check_checkpoint_of_results(path, ckpt, results, run_dir)
    return model.eval(), results


def check_checkpoint_of_results(path: Path, ckpt: dict, results: dict, run_dir: Path) -> None:
    """The checkpoint a target is loaded from must be of the run its ``results.json`` reports
    (a checkpoint copied in from another seed's or recipe's run would be approximated under the
    results' accuracy): the same config (a target finished from a longer run's checkpoint keeps
    that run's ``epochs``) and as many epochs done. The checkpoint counts an epoch that a
    Trainer option (``max_time``, ``max_steps``) stopped part way, as Lightning does
    (:func:`epochs_done`); the results count it in ``partial_epoch``, not in ``epochs_done``."""
    stored = stored_config(ckpt, path)
    reported = results.get("config") if isinstance(results.get("config"), dict) else {}
    fields = changed_fields(stored, reported, ignored=(*RESUMABLE, "epochs"))
    said_done = results.get("epochs_done")
    if isinstance(said_done, int) and results.get("partial_epoch"):
        said_done += 1
    for what, own, said in [*((name, stored.get(name), reported.get(name)) for name in fields),
                            ("epochs done", epochs_done(ckpt), said_done)]:
        if own != said:
            raise CheckpointError(f"checkpoint {str(path)!r} is of another run than "
                                  f"{str(Path(run_dir) / RESULTS)!r}: its {what} is {own!r}, "
                                  f"the results' {said!r}; delete {str(run_dir)!r} to train the "
                                  f"target again")


def trained_target(name: str, *, data_dir=None, **overrides) -> tuple[nn.Module, dict]:
    """Recipe ``name`` trained through :func:`lotterynet.run.run`, or loaded when its run
    directory already holds the finished run; a run that was killed before it finished
    continues from its last checkpoint. Returns ``(model in eval mode, info)``. Stopped by
    Ctrl-C or SIGTERM, it says so: the same command again (``approximate``'s, ``targets``')
    continues it; the run's own line said to resume with ``--resume``, which ``approximate``
    has not (and ``targets``' is for a longer run's checkpoint); so does one out of memory
    (:func:`out_of_memory`), one that could not write a file (the disk full), and one refused
    before it is built for the memory it needs (:func:`~lotterynet.memory.check_fits`, whose
    line named ``--pairs``, ``--hidden``, ``--structure``, ``--arch`` and ``--batch-size``:
    :func:`free_memory`)."""
    config = target_config(name, data_dir=data_dir, **overrides)
    run_dir = Path(config.out)
    if config.resume and (run_dir / RESULTS).is_file():  # (run() checks it otherwise)
        check_same_run((config.resume, load_checkpoint(config.resume)), config)
    if not (run_dir / RESULTS).is_file():
        last = run_dir / CHECKPOINTS / LAST
        if holds_files(run_dir):  # stopped before its end (begun from --resume or not)
            if last.is_file():  # continued from its own checkpoint
                config = dataclasses.replace(config, resume=str(last))
            elif left_before_a_checkpoint(run_dir, epochs_done(load_checkpoint(
                    config.resume)) if config.resume else 0):  # (its history came along)
                shutil.rmtree(run_dir)  # stopped before its first checkpoint: nothing to keep
            else:
                raise ConfigError(f"target folder {str(run_dir)!r} holds an unfinished run "
                                  f"with no checkpoint; delete it to train the target again")
        try:
            with reporting_write_failure(partial(goes_on_by, f"target run {str(run_dir)!r}",
                                                 last, "command"), instead=True):
                run(config)
        except Interrupted as stop:
            raise run_again_to_go_on(stop, f"target run {str(run_dir)!r}", last,
                                     "command") from None
        except OutOfMemory as err:
            raise out_of_memory(err, config, last) from None
        except DoesNotFit as err:  # (the run's check before it is built: its flags' remedies)
            raise DoesNotFit(f"target run {str(run_dir)!r}: {err.args[0]}",
                             f"{free_memory(config)}, or run the same command on a machine "
                             f"with more memory") from None
        if config.resume and not last.is_file():  # nothing left to train: the resumed
            last.parent.mkdir(parents=True, exist_ok=True)  # checkpoint was tested
            shutil.copy(config.resume, last)
        if not (run_dir / RESULTS).is_file():  # --stop-after, or a Trainer option that stops it
            raise ConfigError(f"target run {str(run_dir)!r} stopped before its last epoch; run "
                              f"the same command again to continue it from its checkpoint")
    model, results = load_target(run_dir)
    differ = results_differ(config, results)
    if differ:  # (a folder copied or renamed: another arch's network would be approximated)
        stored = results.get("config", {}).get(differ[0])
        raise ConfigError(f"target folder {str(run_dir)!r} holds a run of another recipe than "
                          f"{name}: its {differ[0]} is {stored!r}, the recipe's "
                          f"{getattr(config, differ[0])!r}; delete it to train the target again")
    info = {"recipe": name, "run_dir": str(run_dir), "test_accuracy": results["test_acc"],
            "weights_sha256": tensors_digest(model.state_dict()),
            "paper_test_accuracy": PAPER_ACCURACY[name], "epochs": results["epochs_done"],
            "paper_epochs": RECIPES[name]["epochs"], "train_seconds": results["train_seconds"],
            "optimizer": {k: results["config"][k] for k in
                          ("optimizer", "lr", "momentum", "weight_decay", "scheduler",
                           "batch_size")}}
    return model, info


def out_of_memory(err: OutOfMemory, config, checkpoint: Path) -> OutOfMemory:
    """``err``, a target's run out of memory, as the command that trains it can go on: its
    batch size and model are the paper's recipe, which no flag of ``approximate`` or
    ``targets`` changes, so only the same command again where more memory is free, from its
    ``checkpoint`` or, without one, over (:func:`~lotterynet.sweep_jobs.going_on`). The run's
    own line advised a smaller ``--batch-size`` and ``--resume``, flags the commands have not
    (or, ``targets``' ``--resume``, for another checkpoint)."""
    again, over = run_again("command")
    return OutOfMemory(f"target {err.args[0]}", free_memory(config),
                       going_on(checkpoint, again, None), over)


def free_memory(config) -> str:
    """What makes a target's run of ``config`` fit, said in the terms of ``approximate`` and
    ``targets`` (:func:`out_of_memory`, :func:`trained_target`): its batch size and model are
    the paper's recipe, which none of their flags changes (``--epochs`` and
    ``--target-epochs`` do not change what a step holds)."""
    return (f"free memory (its batch size, {config.batch_size}, and model are the paper's "
            f"recipe: no flag of this command changes them)")


def add_data_and_targets_dirs(parser: argparse.ArgumentParser) -> None:
    """The folders a command that trains targets reads and writes (this module's and
    :mod:`lotterynet.approximate`'s)."""
    parser.add_argument("--data-dir", help="folder holding MNIST/ and FashionMNIST/ in "
                        "torchvision's layout (default: $LOTTERYNET_DATA, else ./data; "
                        "downloaded if missing and online)")
    parser.add_argument("--targets-dir", type=Path,
                        help=f"where the trained targets' runs are kept (default: {TARGETS_DIR}, "
                        f"under the working folder)")


def checked_targets_dir(targets_dir: Path | None) -> Path:
    """``--targets-dir`` (:data:`TARGETS_DIR` when not given), refused before any work unless
    it is, or can be made, a writable folder, and a path as train.py takes one (not ``~/t``,
    which was refused as the target run's ``out``)."""
    targets_dir = TARGETS_DIR if targets_dir is None else targets_dir
    check_path("--targets-dir", str(targets_dir))
    check_output_dir(targets_dir, "--targets-dir")
    return targets_dir


def main(argv: list[str] | None = None) -> None:
    parser = OneLineErrorParser(prog="python -m lotterynet.targets", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="+", choices=list(RECIPES),
                        help="the targets to train (or load, where trained already)")
    add_data_and_targets_dirs(parser)
    parser.add_argument("--epochs", type=int, help="deviate from the recipe's epochs")
    parser.add_argument("--resume", help="with --epochs: finish from this checkpoint of a longer "
                        "run of the same recipe (its first EPOCHS epochs; valid only for a "
                        "constant schedule, where the first epochs do not depend on the total)")
    args = parser.parse_args(argv)
    if args.epochs is not None and args.epochs < 1:  # (as approximate's --target-epochs)
        parser.error(f"--epochs must be >= 1, got {args.epochs}")
    overrides = {} if args.epochs is None else {"epochs": args.epochs}
    if args.resume is not None:
        if len(args.names) > 1:
            parser.error("--resume continues one target: give one name")
        if args.epochs is None or RECIPES[args.names[0]]["scheduler"] != "constant":
            parser.error("--resume needs --epochs and a recipe with a constant schedule; to "
                         "continue a stopped target, run the same command again")
        overrides["resume"] = args.resume
    kept = (f"every target trained is kept in {str(args.targets_dir or TARGETS_DIR)!r}: run "
            f"the same command again to go on (a trained target is loaded, not trained again)")
    try:  # (Ctrl-C and SIGTERM one line wherever they land, as train.py's: process_lifetime.py; a
        # target's training says its own)
        with stopped(kept), stopping_on_sigterm(ends_the_process=True):
            targets_dir = checked_targets_dir(args.targets_dir)
            for name in args.names:
                _, info = trained_target(name, data_dir=args.data_dir, targets_dir=targets_dir,
                                         **overrides)
                print(json.dumps(info), flush=True)
    except REPORTED as err:
        parser.exit(exit_code(err), f"{parser.prog}: error: {message(err)}\n")


if __name__ == "__main__":
    encodable_output()
    main()
