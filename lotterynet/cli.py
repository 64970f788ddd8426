"""``python train.py``: the command line over :func:`lotterynet.run.run`.

``main(argv)`` returns the exit code: 0 on success, 2 on bad input (one line on stderr naming
the bad value and the valid choices, no traceback, before any work starts), 1 when the disk
fills (one line; the last good checkpoint is kept), W&B fails to log (one line, its
:class:`~lotterynet.errors.WandbFailed`) or a sweep's cell fails, 4 when memory runs out (one
line; the last good checkpoint is kept), 3 when the training diverges (one line; its last
finite checkpoint is kept), 130 / 143 when stopped by Ctrl-C / SIGTERM (resumable from its
checkpoint).
"""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from .config import RESUMABLE, changed_fields, load_yaml, make_config, typed_value
from .config_checks import check_path, refuse_unread_file_options, refuse_unread_flags
from .config_flags import (
    TRAINER_KEYS,
    add_config_arguments,
    check_agree,
    dotted_flags,
    given_flags,
    lightning_devices,
    nested_config,
    overlay,
    split_trainer_options,
    without_devices_named_in,
)
from .config_yaml import dump_yaml
from .errors import (
    ERROR,
    PROG,
    REPORTED,
    ConfigError,
    Interrupted,
    OneLineErrorParser,
    TrainingDiverged,
    exit_code,
    flag_name,
    message,
    plural,
    resume_flag,
    stopped,
)
from .machine import (
    check_rank_variables,
    check_slurm_tasks,
    is_launched_worker,
    keep_freed_memory,
)
from .process_lifetime import stopping_on_sigterm
from .sweep_grid import (
    Overrides,
    Sweep,
    load_sweep,
    read_resolved_sweep,
    sweep_dir_of,
    write_wandb_sweep,
)

# What a resumed run never takes from the checkpoint's stored config (where files go, how far to
# train now): the flags decide, or the location of the checkpoint does.
NOT_RESUMED = ("resume", "out", "stop_after", "overwrite")
SWEEP_FLAGS = ("sweep", "sweep_variants", "sweep_sparsities", "sweep_epochs", "sweep_seeds",
               "baseline", "sweep_out", "wandb_sweep", "cell", "table_only")
#: Those of them that give the sweep's grid; the others act on a grid given with them.
SWEEP_GRID_FLAGS = ("sweep", "sweep_variants", "sweep_sparsities", "sweep_epochs", "sweep_seeds")
#: The flags that name files or folders.
PATH_FLAGS = ("config", "data_dir", "out", "resume", "sweep", "sweep_out", "wandb_sweep",
              "stack_file")
#: How a sweep runs its cells (flags that nothing else reads), with their defaults.
SWEEP_RUN_FLAGS = {"jobs_per_device": 1, "stack": True, "yes": False}
#: How a command stopped where its run, stack or sweep did not say so goes on
#: (:func:`~lotterynet.errors.stopped`): before its work began (its options and files being
#: read, torch and Lightning imported: seconds), having written nothing...
NOT_STARTED = ("it had not started (it was reading its options and files and importing what it "
               "runs): nothing was written; run the same command again")
#: ... or once it had begun (a sweep's own files, a finished run's summary being printed).
BEGUN = "it had begun: what it wrote is kept; run the same command again to go on from it"


class OneLineParser(OneLineErrorParser):
    """Argument errors as one line (no usage block), exit code 2; LightningCLI's dotted flags
    (``--trainer.KEY``, ``--data.KEY``: :func:`~lotterynet.config_flags.dotted_flags`) accepted."""

    def parse_args(self, args=None, namespace=None):
        try:
            flags = dotted_flags(sys.argv[1:] if args is None else list(args))
        except ConfigError as err:  # an unknown --model.KEY / --data.KEY
            self.error(str(err))
        args = super().parse_args(flags, namespace)
        for name in PATH_FLAGS:
            try:
                if getattr(args, name) is not None:
                    check_path(flag_name(name), getattr(args, name))
            except ConfigError as err:
                self.error(str(err))
        return args


class OneConfigFile(argparse.Action):
    """``--config`` given once: a second one was read alone, the first dropped unsaid (where
    LightningCLI merges them)."""

    def __call__(self, parser, namespace, value, option_string=None):
        if getattr(namespace, self.dest) is not None:
            parser.error(f"--config is given twice ({getattr(namespace, self.dest)!r}, then "
                         f"{value!r}): one config file is read; put their options in one file, "
                         f"or give the second's as flags")
        setattr(namespace, self.dest, value)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG,
        description="Edge-popup training of score masks over frozen random weights (or the "
                    "trained dense baseline), with checkpoints, results.json, CSV and W&B logs.")
    parser.add_argument("--config", metavar="FILE.yaml", default=None, action=OneConfigFile,
                        help="YAML file of options: keys as the flags (with _ or -), or "
                             "LightningCLI-style model:, data: and trainer: sections; flags "
                             "given on the command line override it (default: none)")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config as a YAML file (model:, data:, "
                             "trainer: sections) that --config reads back, and exit")
    add_config_arguments(parser)
    add_sweep_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # --help (0) or an argument error (2, already printed)
        return int(exit_.code or 0)
    try:
        # SIGTERM anywhere (a stack or sweep file being read, the summary printed) is one line
        # and ignored on the way out
        with stopped(NOT_STARTED), stopping_on_sigterm(ends_the_process=True):
            return dispatch(args)
    except REPORTED as err:
        stops_every_rank = isinstance(err, (TrainingDiverged, Interrupted))
        if not (stops_every_rank and is_launched_worker()):  # rank 0 says so
            print(f"{ERROR}{message(err)}", file=sys.stderr)
        return exit_code(err)


def dispatch(args: argparse.Namespace) -> int:
    """A stack file, a W&B sweep file, a sweep or one run. The heavy stack (torch, Lightning) is
    imported only once a run's config is valid: --help, bad flags and bad config files answer at
    once."""
    check_rank_variables()
    check_slurm_tasks()
    check_flag_combinations(args)
    fill_sweep_run_defaults(args)
    if args.stack_file:
        return run_stack_file(args)
    if not is_sweep(args):
        return run_one(args)
    if args.table_only:
        return write_table_only(args)
    sweep = load_sweep(args, given_values(args))  # every cell's config checked
    if args.wandb_sweep:
        return write_wandb_sweep_file(args, sweep)
    return run_sweep_cells(args, sweep)


#: The default of a grid's flag (--sweep-variants, --sweep-sparsities, --sweep-epochs).
GRID_DEFAULT = "(default: the sweep file's; without --sweep, required)"


def add_sweep_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("sweep mode (a grid of runs, aggregated like Figure 2)")
    group.add_argument("--sweep", metavar="FILE.yaml", help="sweep file (see "
                       "configs/sweeps/); the run flags above override its base config "
                       "(not what its variants set)")
    group.add_argument("--sweep-variants", metavar="LIST", help="comma list of structure"
                       "[:activation], e.g. subsetsum:identity,subsetsum:relu,wide " + GRID_DEFAULT)
    group.add_argument("--sweep-sparsities", metavar="LIST", help="comma list of sparsities "
                       "(fraction PRUNED), e.g. 0.5,0.9 " + GRID_DEFAULT)
    group.add_argument("--sweep-epochs", metavar="LIST", help="comma list of epoch budgets; "
                       "the best budget is kept per point " + GRID_DEFAULT)
    group.add_argument("--sweep-seeds", metavar="LIST", help="comma list of seeds (default: the "
                       "sweep file's seeds, else 0)")
    group.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=None,
                       help="also run the trained dense baseline (default: the "
                            "sweep file's baseline, else yes)")
    group.add_argument("--sweep-out", metavar="DIR", help="sweep directory (default: "
                       "runs/sweep-ARCH-<sweep file name>, or runs/sweep-ARCH-grid without "
                       "--sweep)")
    group.add_argument("--jobs-per-device", type=int, default=None, metavar="N",
                       help="stacks and cells run at once on each device, one subprocess "
                            "each; with several GPUs every GPU gets its own, on the CPU the "
                            "cores are shared among them; with more slots than stacks the "
                            "stacks are cut into parts (default: 1, in-process)")
    group.add_argument("--stack", action=argparse.BooleanOptionalAction, default=None,
                       help="train the cells of each variant and seed as one stacked model "
                            "(--no-stack: one run per cell; default: stack)")
    group.add_argument("--yes", action="store_true", default=None,
                       help="start a sweep that is estimated to take over 4 hours on the "
                            "CPU (a machine without CUDA), "
                            "or one (or a --cell run; with --wandb-sweep, its agents') that "
                            "sets aside finished cells run with another config (without it "
                            "such a sweep is refused, saying why)")
    group.add_argument("--wandb-sweep", metavar="FILE.yaml", help="write a W&B sweep file "
                       "for `wandb sweep FILE && wandb agent ID` instead of running: a grid "
                       "over exactly this sweep's cells, metric test/acc")
    group.add_argument("--cell", metavar="NAME", help="run only this cell of the sweep, as "
                       "the sweep would (what the agents of a --wandb-sweep file run)")
    group.add_argument("--table-only", action="store_true", default=None,
                       help="write the sweep's table and figure from the cells finished in "
                            "its folder, train nothing: the grid from --sweep-out DIR's "
                            "sweep.json, or from --sweep FILE (and the --sweep-* and run "
                            "flags) as the sweep resolves it; points missing cells are marked "
                            "as the sweep marks them; logs no W&B summary run (the sweep run "
                            "again does); safe while a sweep runs there")
    group.add_argument("--stack-file", metavar="STACK.yaml", help="run the stack that a "
                       "stacked sweep with --jobs-per-device wrote to "
                       "SWEEP/stacks/<stack>/stack.yaml for the subprocess it starts (a sweep "
                       "in one process writes none); of the run flags it takes only "
                       "--data-dir, where the data is")


def is_sweep(args: argparse.Namespace) -> bool:
    """Any sweep flag makes it a sweep (an incomplete one is then refused, not run as a run)."""
    return any(getattr(args, name) is not None for name in SWEEP_FLAGS)


def explicit_values(args: argparse.Namespace) -> dict:
    """The YAML file's values overlaid with the flags given on the command line."""
    return given_values(args).values


def given_values(args: argparse.Namespace) -> Overrides:
    """:func:`explicit_values`, with how the command gave each (the config file's keys, the
    flag of each other: what a sweep's refusals name), the config file read once."""
    values = load_yaml(args.config) if args.config else {}
    flags = given_flags(args)
    flagged = {key: flag_name(key) for key in flags}
    if "model_kwargs" in flags:  # [(KEY, VALUE), ...]
        flags["model_kwargs"] = dict(flags["model_kwargs"])
    if "trainer" in flags:  # [(KEY, VALUE), ...]: the Trainer options
        given = dict(flags["trainer"])
        covered, options = split_trainer_options(given)
        check_agree(flags, covered, given, lambda name: f"--trainer.{name}", flag_name)
        flags = {**covered, **flags, "trainer": options}
        flagged = {**{key: f"--trainer.{name}" for name, key in TRAINER_KEYS.items()
                      if name in given}, **flagged}  # (--trainer.devices auto: not covered)
    # (the file's devices, flat or trainer.devices, read into the Trainer's: named as its own)
    in_file = set(values) | ({"devices"} if "devices" in (values.get("trainer") or {}) else set())
    return Overrides(lightning_devices(overlay(without_devices_named_in(values, flags), flags)),
                     frozenset(in_file - set(flagged)), flagged, args.config)


def config_from_args(args: argparse.Namespace):
    """Checkpoint's config (when resuming) < YAML file < flags given on the command line; a
    resumed run refuses values that would change what it trains, and every run a flag that
    it would not read."""
    given = given_values(args)
    config = resolved_config(given.values, given.spelled)
    refuse_unread_flags(given_flags(args), [config])
    if args.config:
        refuse_unread_file_options(args.config, given.file_values, [config])
    return config


def resolved_config(explicit: dict, spell: Callable[[str], str]):
    """The run's config from the values the command gave (:func:`given_values`; ``spell``
    names each as it gave it), over the resumed run's where it resumes one."""
    if not explicit.get("resume"):  # from a flag, or from the config file
        return make_config(explicit, spell)
    from .checkpointing import stored_run

    resume = typed_value("resume", explicit["resume"])  # (a file's resume: 3 was a TypeError)
    check_path("resume", resume)
    stored, done = stored_run(resume)
    check_stop_after_is_ahead(explicit.get("stop_after"), done)
    if not explicit.get("data_dir"):
        check_stored_data_dir(stored.get("data_dir"), resume)
    # the resumed run's values, but those the command decides (NOT_RESUMED, devices it names)
    values = without_devices_named_in(
        {k: v for k, v in stored.items() if k not in NOT_RESUMED}, explicit)
    run_options = values.get("trainer") if isinstance(values.get("trainer"), dict) else {}
    refuse_changed_options(stored, run_options, explicit)
    if "trainer" in explicit:  # the options given (the run's own, but devices) over the others
        explicit = {**explicit, "trainer": {**run_options, **explicit["trainer"]}}
    return make_config({**values, **explicit}, spell)


def check_stop_after_is_ahead(stop_after: int | None, done: int) -> None:
    """A resume's ``--stop-after`` must be past the ``done`` epochs of the run it resumes."""
    stop_after = typed_value("stop_after", stop_after)  # (a file's: 'x' was a TypeError)
    if stop_after is not None and stop_after <= done:
        raise ConfigError(f"--stop-after {stop_after}: the resumed run has done "
                          f"{plural(done, 'epoch')} already; give more, or leave it out to "
                          f"train to its end")


def check_stored_data_dir(data_dir: str | None, resume: str) -> None:
    """A resumed run reads its data from the folder it was given (``--data-dir``, stored in
    its checkpoint), as a given ``--data-dir`` comes before ``$LOTTERYNET_DATA``: one not here
    (a colleague's checkpoint names their path) is refused, saying how to point elsewhere,
    rather than reported as data missing there or downloaded into it."""
    if data_dir is not None and not Path(data_dir).is_dir():
        raise ConfigError(f"--resume: the data folder {data_dir!r} stored in checkpoint "
                          f"{resume!r} is not a folder here; give --data-dir with the folder "
                          f"that holds the data here (a stored folder comes before "
                          f"$LOTTERYNET_DATA)")


def refuse_changed_options(stored: dict, run_options: dict, explicit: dict) -> None:
    """A resumed run keeps its config: refuse the first value given (``explicit``) that differs
    from the resumed run's (``stored``; its Trainer options ``run_options``), naming the flags
    a resume may be given."""
    changed = changed_options(stored, run_options, explicit)
    if not changed:
        return
    flag, given, was = changed[0]
    if flag == "--lr" and stored.get("lr") is None:  # unset: the architecture's recipe lr
        from .archs import recipe_lr

        was = f"{recipe_lr(str(stored.get('arch')), None)!r} (its recipe's)"
    differs = f"differs from the resumed run's {was}" if was else \
        "is not one of the resumed run's Trainer options"
    allowed = [flag_name(k) for k in RESUMABLE if k != "overwrite"]
    raise ConfigError(  # (--overwrite: refused with a resume, which never clears its run)
        f"{flag} {given!r} {differs}; a resumed run keeps its config (with --resume only "
        f"these may be given: {', '.join(allowed)})")


def changed_options(stored: dict, run_options: dict, explicit: dict
                    ) -> list[tuple[str, object, str | None]]:
    """The values given to a resume (``explicit``) that differ from the resumed run's, each as
    (its flag, the value given, the run's value as a refusal writes it: ``None`` for a Trainer
    option the run was not given): the run options (:func:`changed_fields`), then the Trainer
    options (:func:`changed_trainer_options`)."""
    changed = [(flag_name(name), explicit[name], repr(stored.get(name)))
               for name in changed_fields(stored, explicit) if name != "trainer"]
    changed += [(f"--trainer.{name}", explicit["trainer"][name],
                 repr(run_options[name]) if name in run_options else None)
                for name in changed_trainer_options(run_options, explicit.get("trainer") or {})]
    return changed


def changed_trainer_options(run_options: dict, given: dict) -> list[str]:
    """The Trainer options ``given`` to a resume (``--trainer.KEY``, a config file's
    ``trainer:``) that differ from the resumed run's ``run_options``, each compared with its
    own: the others were not given, and one given as it was changes nothing. A non-integer
    ``devices``, a flag that a resume may change, is never one of them."""
    return [name for name, value in given.items() if TRAINER_KEYS.get(name) not in RESUMABLE
            and (name not in run_options or run_options[name] != value)]


def summary_line(results: dict) -> str:
    """What the run reached and where its files are."""
    run_dir = results["run_dir"]
    checkpoint = f"{run_dir}/checkpoints/last.ckpt"
    if not results.get("finished"):
        return (f"stopped after {plural(results['epochs_done'], 'epoch')}; resume with "
                f"{resume_flag(checkpoint)}")
    params = results["params"]
    size = (f"kept {params['kept']:,} of {params['maskable']:,} maskable" if params["maskable"]
            else f"{params['trainable']:,} trained weights")
    ticket = f"\n  ticket:     {run_dir}/model.ticket" if params["maskable"] else ""  # masks
    wandb = f"\n  W&B:        {results['wandb_dir']}" if results.get("wandb_dir") else ""
    seconds, partial = results["train_seconds"], results.get("partial_epoch")
    part = f" and {partial['batches']} of {partial['of']} batches" if partial else ""
    return (f"test accuracy {100 * results['test_acc']:.2f}% | {size} | "
            f"{seconds:.{1 if seconds < 10 else 0}f} s "
            f"({plural(results['epochs_done'], 'epoch')}{part})\n"
            f"  results:    {run_dir}/results.json\n  checkpoint: {checkpoint}{ticket}{wandb}")


def run_stack_file(args: argparse.Namespace) -> int:
    """``--stack-file``: the stack exactly as its file says (flags that would change it are
    refused rather than ignored); ``--data-dir``, where the data is, may be given, as with
    ``--resume``."""
    from .loggers import check_wandb_environment
    from .stack import run_stack
    from .stack_files import read_stack_file, sweep_folder_of
    from .sweep import outside_a_running_sweep

    keep_freed_memory()  # CPU steps allocate many score-sized temporaries (see there)
    values = explicit_values(args)
    configs, cells = read_stack_file(args.stack_file, values.get("data_dir"))
    flags = [flag_name(k) for k in values if k != "data_dir"]
    flags += [flag_name(k) for k in SWEEP_FLAGS if getattr(args, k) is not None]
    if flags:
        raise ConfigError(f"--stack-file runs the stack as its file says; drop "
                          f"{', '.join(flags)} (edit the file, or run the sweep instead; only "
                          f"--data-dir may be given)")
    if any(config.wandb for config in configs):
        check_wandb_environment(runs="every member of this stack" * (len(configs) > 1))
    with stopped(BEGUN):
        with outside_a_running_sweep(sweep_folder_of(args.stack_file),
                                     f"--stack-file {args.stack_file!r}"):
            results = run_stack(configs, Path(args.stack_file).parent, cells, in_a_sweep=True)
        print(f"stack {args.stack_file}: {sum(r['finished'] for r in results)} of "
              f"{len(results)} members finished", flush=True)
    return 0


def check_flag_combinations(args: argparse.Namespace) -> None:
    """Refuse a flag that the others make mean nothing, before anything is read."""
    check_table_only(args)
    check_sweep_run_flags(args)
    check_a_sweep_has_its_grid(args)
    check_print_config(args)


def check_sweep_run_flags(args: argparse.Namespace) -> None:
    """:data:`SWEEP_RUN_FLAGS` say how this process runs a sweep's cells: a stack file and a
    run do not read them, --cell runs one cell (it reads --yes alone: it sets aside its cell
    finished with another config), and with --wandb-sweep W&B agents run them (--yes goes into
    their --cell command; --cell, one agent's, refuses --wandb-sweep too)."""
    how = [flag_name(k) for k in SWEEP_RUN_FLAGS if getattr(args, k) is not None]
    if how and (args.stack_file or not is_sweep(args)):
        raise ConfigError(f"{how[0]} says how a sweep runs its cells; give it with --sweep or "
                          f"the --sweep-* flags (a {'stack file' if args.stack_file else 'run'} "
                          f"does not read it)")
    unread = [flag for flag in how if flag != "--yes"]
    if args.cell and (unread or args.wandb_sweep):
        raise ConfigError(f"--cell runs one cell in this process; drop "
                          f"{unread[0] if unread else '--wandb-sweep'}")
    if args.wandb_sweep and unread:
        raise ConfigError(f"{unread[0]} says how this process runs a sweep's cells; with "
                          f"--wandb-sweep W&B agents run them, one cell each (drop {unread[0]})")


#: What --table-only (which runs nothing) refuses beside it: what runs cells or writes
#: something else, and how a sweep runs its cells.
NOT_WITH_TABLE_ONLY = ("cell", "stack_file", "wandb_sweep", "print_config", *SWEEP_RUN_FLAGS)


def check_table_only(args: argparse.Namespace) -> None:
    """``--table-only`` writes a sweep's table from its finished cells and runs nothing: the
    flags that run cells (or say how) are refused, and without a grid (``--sweep``, the
    ``--sweep-*`` flags) it needs the sweep's folder, whose ``sweep.json`` holds its whole
    config: a run flag, a ``--config`` file or ``--baseline`` would not change it."""
    if not args.table_only:
        return
    clash = next((k for k in NOT_WITH_TABLE_ONLY if getattr(args, k) is not None and (
        getattr(args, k) is not False or k == "stack")), None)  # (--print-config: False)
    if clash:
        flag = "--no-stack" if clash == "stack" and args.stack is False else flag_name(clash)
        raise ConfigError(f"--table-only writes the table and figure of a sweep's finished "
                          f"cells and runs nothing; drop {flag}")
    if any(getattr(args, name) is not None for name in SWEEP_GRID_FLAGS):
        return
    if args.sweep_out is None:
        raise ConfigError("--table-only needs the sweep: its folder with --sweep-out DIR (whose "
                          "sweep.json holds its grid), or --sweep FILE.yaml (or the --sweep-* "
                          "flags) as it ran")
    given = [flag_name(k) for k in given_flags(args)] + ["--config"] * bool(args.config) + [
        "--no-baseline" if args.baseline is False else "--baseline"] * (args.baseline is not None)
    if given:
        raise ConfigError(f"{given[0]}: --table-only --sweep-out reads the sweep's grid and "
                          f"config from {str(Path(args.sweep_out) / 'sweep.json')!r}; drop "
                          f"{given[0]}, or give the sweep with --sweep FILE.yaml (or the "
                          f"--sweep-* flags) as it ran")


def check_a_sweep_has_its_grid(args: argparse.Namespace) -> None:
    """A sweep's flag without the grid (:data:`SWEEP_GRID_FLAGS`) was meant for a run, which
    does not read it (a stack file refuses it itself: :func:`run_stack_file`)."""
    if args.stack_file or args.table_only or not is_sweep(args) or any(
            getattr(args, name) is not None for name in SWEEP_GRID_FLAGS):
        return
    flag = next(flag_name(k) for k in SWEEP_FLAGS if getattr(args, k) is not None)
    flag = "--no-baseline" if flag == "--baseline" and args.baseline is False else flag
    raise ConfigError(f"{flag} is a sweep's option; give the sweep with --sweep FILE.yaml "
                      f"or the --sweep-* flags (a run does not read it)")


def check_print_config(args: argparse.Namespace) -> None:
    """--print-config prints one run's config, not a stack file's or a sweep's."""
    if args.print_config and args.stack_file:
        raise ConfigError(f"--print-config prints one run's config; the stack's members "
                          f"are in {args.stack_file} itself (drop --print-config)")
    if args.print_config and is_sweep(args):
        raise ConfigError("--print-config prints one run's config; drop it or the sweep "
                          "flags (a sweep writes its resolved grid to SWEEP/sweep.json)")


def fill_sweep_run_defaults(args: argparse.Namespace) -> None:
    """The :data:`SWEEP_RUN_FLAGS` left out get their defaults (None until then: the checks
    refuse only those given)."""
    for name, default in SWEEP_RUN_FLAGS.items():
        if getattr(args, name) is None:
            setattr(args, name, default)


def write_wandb_sweep_file(args: argparse.Namespace, sweep: Sweep) -> int:
    """``--wandb-sweep``: write the W&B sweep file over the sweep's cells instead of running
    them (W&B agents run them, one cell each)."""
    from .sweep_checks import check_buildable, check_sweep_dir
    from .sweep_wandb import wandb_group

    if sweep.base.get("wandb") is False:  # (its agents run every cell with --wandb)
        raise ConfigError(f"--wandb-sweep: its agents log every cell to W&B (where "
                          f"the sweep's metric, test/acc, is read); drop "
                          f"{'--no-wandb' if args.wandb is False else 'wandb: false'}")
    sweep_dir = sweep_dir_of(sweep, args.sweep, args.sweep_out)
    check_sweep_dir(sweep_dir)  # what its agents would find only once they start
    # the agents' group, in their cells file: one, whatever path reaches the folder
    sweep.base["wandb_group"] = wandb_group(sweep, sweep_dir, args.sweep, bool(args.sweep_out))
    check_buildable(sweep)
    with stopped(BEGUN):
        cells_file = write_wandb_sweep(sweep, Path(args.wandb_sweep), sweep_dir,
                                       bool(args.yes))
        print(f"wrote {args.wandb_sweep} ({len(sweep.cells())} cells, listed in "
              f"{cells_file}): run `wandb sweep {args.wandb_sweep}` then `wandb agent "
              f"<sweep id>`")
    return 0


def write_table_only(args: argparse.Namespace) -> int:
    """``--table-only``: the table and figure of the sweep's finished cells, nothing trained
    (:func:`~lotterynet.sweep.write_finished_table`); the sweep from its folder's
    ``sweep.json`` (``--sweep-out`` alone), or as a sweep resolves its file and flags (its
    data not read: nothing trains)."""
    from .sweep import write_finished_table

    given = any(getattr(args, name) is not None for name in SWEEP_GRID_FLAGS)
    if given:
        sweep = load_sweep(args, given_values(args))
        sweep_dir = sweep_dir_of(sweep, args.sweep, args.sweep_out)
    else:
        sweep_dir = Path(args.sweep_out)
        sweep = read_resolved_sweep(sweep_dir)
    with stopped(BEGUN):
        return write_finished_table(sweep, sweep_dir, given)


def run_sweep_cells(args: argparse.Namespace, sweep: Sweep) -> int:
    """The sweep's cells (or its ``--cell`` alone), run by this process."""
    from .loggers import check_wandb_environment
    from .sweep import run_sweep

    if sweep.base.get("wandb"):
        check_wandb_environment(runs=None if args.cell else "every cell of this sweep")
    keep_freed_memory()
    # a sweep says how it goes on wherever it stops once its first checks (nothing written)
    # have passed (sweep_jobs.stopped_sweep); a --cell run, outside the cell's run, whether its
    # first checks had passed (sweep.run_one_cell sets ``begun`` before it writes anything)
    if not args.cell:
        return run_sweep(args, sweep)
    begun = threading.Event()
    with stopped(lambda: BEGUN if begun.is_set() else NOT_STARTED):
        return run_sweep(args, sweep, begun)


def run_one(args: argparse.Namespace) -> int:
    """One run, its summary printed (or, with ``--print-config``, its config)."""
    config = config_from_args(args)  # reads (torch only) the checkpoint a resume continues
    if args.print_config:
        print(dump_yaml(nested_config(config), sort_keys=False), end="")
        return 0
    from .run import run
    from .sweep import as_a_sweeps_job

    keep_freed_memory()
    with stopped(BEGUN):
        with as_a_sweeps_job(config) as job_type:
            results = run(config, job_type)
        if not is_launched_worker():
            print(summary_line(results), flush=True)
    return 0
