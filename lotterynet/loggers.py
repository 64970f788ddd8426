"""Metric loggers of a run: a CSV log always, W&B on request.

W&B goes offline by itself where wandb finds no API key for its server
(:func:`~lotterynet.config_checks.wandb_has_api_key`); ``$WANDB_MODE``, else the ``mode`` of
W&B's settings files (``wandb offline``), wins (:func:`~lotterynet.config_checks.wandb_mode`).
Offline runs land in ``RUN_DIR/wandb/offline-run-*`` (``$WANDB_DIR/wandb/`` where it is set, as
W&B means it) and upload later with ``wandb sync``.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
import secrets
import shlex
import struct
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from pytorch_lightning.core.saving import save_hparams_to_yaml
from pytorch_lightning.loggers import CSVLogger, Logger, WandbLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment
from pytorch_lightning.utilities import rank_zero_only

from .checkpointing import (
    Resumed,
    atomic_write,
    checkpoint_run_dir,
    epochs_done,
    write_csv_atomic,
    write_failed,
)
from .config_checks import WANDB_SERVER_MODES, wandb_mode
from .errors import IN_THE_WAY, CheckpointError, ConfigError, WandbFailed, exit_code, first_line
from .machine import read_text_within_memory, refuse_larger_than_memory
from .sweep_grid import config_value

METRICS_FILE = "metrics.csv"
WANDB_ID_FILE = "wandb-id"
#: Written in a stack member's cell (atomically; it holds the W&B folder) once the W&B run of
#: the member that diverged has ended: its id file is written as that run starts, and a
#: logging stopped or failed is done again under that id
#: (:func:`~lotterynet.stack.log_diverged_member`).
WANDB_ENDED_FILE = "wandb-ended"


class AtomicExperimentWriter(ExperimentWriter):
    """Lightning's CSV writer, whose rewrite of the whole file when a column first appears
    (``test/acc`` at the test, after the last checkpoint) goes through
    :func:`~lotterynet.checkpointing.write_csv_atomic`: Lightning reopens the file with ``"w"``,
    so a kill during the rewrite left the history cut short."""

    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
        with open(self.metrics_file_path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        write_csv_atomic(self.metrics_file_path, rows, fieldnames)

    def save(self) -> None:
        """Lightning's, whose append of the rows logged raised the system's error as a
        traceback where the disk was full or the run's folder had been taken away: one line
        naming the file (:func:`~lotterynet.checkpointing.write_failed`)."""
        try:
            super().save()
        except OSError as err:
            raise write_failed(err, Path(self.metrics_file_path)) from None

    def log_hparams(self, params: dict) -> None:
        """Lightning's, written atomically (:func:`~lotterynet.checkpointing.atomic_write`):
        Lightning reopens ``hparams.yaml`` with ``"w"`` at each fit's start, so a kill or a
        full disk then left it empty, the run's id with it (what tells a checkpoint of this
        folder's run from another run's copied there, :func:`~lotterynet.run_dir.check_own_run`,
        which then let the other run's resume)."""
        self.hparams.update(params)
        atomic_write(Path(self.log_dir) / self.NAME_HPARAMS_FILE,
                     lambda tmp: save_hparams_to_yaml(tmp, self.hparams))


class HistoryCSVLogger(CSVLogger):
    """Lightning's CSV logger, which deletes ``metrics.csv`` when it starts, made to start from
    ``history`` (the rows of the run being resumed) instead: the file keeps every row across
    any number of kills and resumes. Rows are flushed as they are logged (Lightning: every 100
    steps), so they are on disk before the checkpoint that follows them."""

    def __init__(self, run_dir: Path, history: list[dict]):
        super().__init__(run_dir, name="", version="", flush_logs_every_n_steps=1)
        self._history = history

    @property
    def experiment(self):
        if self._experiment is None and rank_zero_only.rank == 0:  # ranks > 0: a dummy writer
            os.makedirs(self.root_dir, exist_ok=True)
            self._experiment = AtomicExperimentWriter(log_dir=self.log_dir)
            if self._history:
                keys = sorted(set().union(*self._history))
                self._experiment.metrics_keys = keys
                write_csv_atomic(self._experiment.metrics_file_path, self._history, keys)
        return super().experiment


def resumed_history(resumed: Resumed | None) -> list[dict]:
    """The ``metrics.csv`` rows of the run that the ``resumed`` checkpoint belongs to, up to
    what the checkpoint holds: the rows of the steps it has trained (below its
    ``global_step``: Lightning logs a step's rows, and an epoch's end's, at the step's 0-based
    index), also where it was saved within an epoch (``every_n_train_steps``: the rows its
    epoch logged after it are not its own); rows logged after it, before a kill, are logged
    again by the resume. Every epoch it has trained whole (:func:`epochs_done`) has rows. A
    file that is not such a log (edited by hand) is a :class:`CheckpointError`, raised before
    Lightning's CSV logger replaces the file."""
    if not resumed:
        return []
    checkpoint, stored = resumed
    source = checkpoint_run_dir(checkpoint) / METRICS_FILE
    if not source.is_file():
        return []
    refuse_larger_than_memory(source, f"{source}, the history of the run being resumed,",
                              CheckpointError)
    try:
        with open(source, newline="", encoding="utf-8") as f:
            content = f.read()
        reader = csv.DictReader(io.StringIO(content, newline=""))
        rows, columns = list(reader), reader.fieldnames  # (None: an empty file)
    except (UnicodeDecodeError, csv.Error) as err:
        raise CheckpointError(f"{source}, the history of the run being resumed, is not a CSV "
                              f"file ({err}); restore it, or move it away to resume without "
                              f"it") from None
    if columns is not None and "step" not in columns:
        raise CheckpointError(f"{source}, the history of the run being resumed, has no header "
                              f"naming its columns (epoch, step, ...): its first line is "
                              f"{','.join(columns)[:60]!r}; restore it, or move it "
                              f"away to resume without it")
    complete = []
    for line, row in enumerate(rows, start=2):
        if None in row.values() and line == len(rows) + 1 and not content.endswith(("\n", "\r")):
            continue  # the last line, cut off by a kill (not at its end): logged again by the
            # resume; a short last line that ends, as an appended one does, is not the log's
        numbers = {key: row.get(key) or "0" for key in ("epoch", "step")}
        if None in row or None in row.values() or not all(map(is_number, numbers.values())):
            raise CheckpointError(
                f"{source} line {line} is not a row of the run's history (epoch "
                f"{numbers['epoch']!r}, step {numbers['step']!r}, {len(row)} fields); fix or "
                f"remove the line, or move the file away to resume without it")
        text = next((key for key, value in row.items() if value and not is_number(value)), None)
        if text is not None:
            raise CheckpointError(
                f"{source} line {line} holds {row[text]!r} as {text}, not a number: it is not "
                f"a row of the run's history; fix or remove the line, or move the file away "
                f"to resume without it")
        if float(row.get("step") or 0) < stored["global_step"]:
            complete.append(row)
    missing = missing_epochs(complete, epochs_done(stored))
    if missing:
        raise CheckpointError(
            f"{source}, the history of the run being resumed, has no rows of epoch "
            f"{missing[0]}{'' if len(missing) == 1 else f' to {missing[-1]}'}, which its "
            f"checkpoint (epoch {stored['epoch']}) has trained: it was cut short; restore it, "
            f"or move it away to resume without it")
    return complete


def missing_epochs(rows: list[dict], before: int) -> list[int]:
    """The epochs before ``before`` that a history of ``rows`` should hold and does not: from
    0 when it holds the run's first step (a row of step 0), else from its first epoch (the run
    was resumed once without its history; none for a history of no epoch: no history). Every
    epoch logs rows (its end's at least)."""
    epochs = {int(float(r["epoch"])) for r in rows if r.get("epoch")}
    first = 0 if any(float(r.get("step") or 0) == 0 for r in rows) else min(epochs,
                                                                           default=before)
    return sorted(set(range(first, before)) - epochs)


def is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def check_wandb_environment(runs: str | None = None) -> None:
    """Refuse a ``$WANDB_*`` setting that W&B refuses (``WANDB_PROJECT=a/b``, a
    ``WANDB_RUN_ID`` with ``/``, ``WANDB_CONSOLE=bogus``): ``wandb.init`` raises on it only once
    the run's model is built and its first files written. W&B's own checks judge each: the
    variable is read into a :class:`wandb.Settings` as ``wandb.init`` reads the environment.
    For a command of several W&B runs (``runs``: "every cell of this sweep", "every member of
    this stack") ``$WANDB_RUN_ID`` is refused too: each would take that one id and continue
    the same W&B run (:func:`wandb_run_id`; a W&B agent sets it for the one cell it runs)."""
    import wandb
    from wandb.errors import UsageError

    for name, value in sorted(os.environ.items()):
        if not name.startswith("WANDB_"):
            continue
        try:
            wandb.Settings().update_from_env_vars({name: value})
        except (UsageError, ValueError) as err:  # (pydantic's ValidationError is a ValueError)
            reason = err.errors()[0]["msg"] if hasattr(err, "errors") else str(err)
            raise ConfigError(f"${name} is {value!r}, which W&B refuses: "
                              f"{' '.join(reason.split())} (fix it, or unset it)") from None
    if runs and os.environ.get("WANDB_RUN_ID"):
        raise ConfigError(f"$WANDB_RUN_ID is {os.environ['WANDB_RUN_ID']!r}, which would make "
                          f"{runs} one W&B run: unset it (a W&B agent sets it for the one cell "
                          f"it runs, with --cell)")


def wandb_run_id(run_dir: Path, checkpoint: str | None, own: bool = False
                 ) -> tuple[str, bool]:
    """The W&B run id of this run and whether it continues the resumed run's: the resumed
    run's (``RUN/wandb-id``) when the resume writes into that run's own folder (with ``own``,
    whatever it resumes: a stack member's run, logged after its training), else the one a
    W&B sweep agent chose (``$WANDB_RUN_ID``), else a new one. A resume into another ``--out``
    is a new W&B run: the original folder stays resumable, and one W&B run would get two
    histories; so is a resume of a copy (``cp -r R C``), whose id file names R, which still
    holds that id (:func:`own_wandb_id`). Under a sweep agent (``$WANDB_SWEEP_ID``) the run is
    always the agent's (W&B ignores any other id there): a cell an interrupted agent left is
    continued in a new run, which gets its history. A copy's resume says so, in one line: its
    user may expect R's W&B run to go on."""
    origin = checkpoint_run_dir(checkpoint) if checkpoint else None
    here = Path(run_dir).resolve()
    kept = own_wandb_id(here) if own or origin == here else None
    continued = kept is not None and not os.environ.get("WANDB_SWEEP_ID")
    run_id = kept if continued else os.environ.get("WANDB_RUN_ID") or secrets.token_hex(4)
    if rank_zero_only.rank == 0:
        copied = read_wandb_id(here) if (own or origin == here) and kept is None else None
        keep_wandb_id(here, run_id)
        if copied:
            print(f"W&B: {str(here)!r} is a copy of {str(copied[1])!r}, which keeps its W&B run "
                  f"{copied[0]}: it logs into a W&B run of its own, {run_id}"
                  f"{copied_wandb_folders(here, copied[0])}", flush=True)
    return run_id, continued


def copied_wandb_folders(run_dir: Path, copied_id: str) -> str:
    """What a copy's line adds where its W&B folder holds the offline runs of the run it was
    copied from (``*-<copied_id>``): that they are that run's, and the ``wandb sync`` of its
    own (:func:`wandb_sync`): ``wandb sync C/wandb/offline-run-*`` uploaded the copy's partial
    history into the first run's W&B run."""
    if not any((Path(wandb_dir(run_dir)) / "wandb").glob(f"*-{copied_id}")):
        return ""
    return (f" (the *-{copied_id} folders copied with it are that run's: sync its own, "
            f"{wandb_sync(run_dir)})")


def summary_wandb_id(folder: Path) -> str:
    """The W&B id of the one run that ``folder`` (a sweep's) logs its summary into each time
    it is aggregated: the one its id file keeps (:func:`own_wandb_id`: not a copied folder's),
    else a new one, kept there."""
    here = Path(folder).resolve()
    run_id = own_wandb_id(here) or secrets.token_hex(4)
    keep_wandb_id(here, run_id)
    return run_id


def keep_wandb_id(folder: Path, run_id: str) -> None:
    """Write ``folder``'s W&B id file (atomically): ``run_id`` and the folder, resolved, that
    it was written in (:func:`own_wandb_id`)."""
    atomic_write(folder / WANDB_ID_FILE,
                 lambda tmp: tmp.write_text(f"{run_id}\n{folder}\n", encoding="utf-8"))


def own_wandb_id(run_dir: Path) -> str | None:
    """The W&B id in ``run_dir``'s id file, unless the file was written in another folder that
    still holds that id: a copy of a run (``cp -r R C``), whose W&B run is R's (a moved run's
    first folder is gone, and the id goes with it)."""
    recorded = read_wandb_id(run_dir)
    if recorded is None:
        return None
    run_id, written_in = recorded
    if written_in != run_dir and (read_wandb_id(written_in) or ("",))[0] == run_id:
        return None
    return run_id


def read_wandb_id(run_dir: Path) -> tuple[str, Path] | None:
    """``(id, the folder its file was written in)`` from ``run_dir``'s W&B id file (an older
    file holds the id alone: ``run_dir``); None without one, or where it cannot be read (larger
    than the memory: read whole, a MemoryError's traceback)."""
    try:
        run_id, _, written_in = read_text_within_memory(run_dir / WANDB_ID_FILE, WANDB_ID_FILE,
                                                        OSError).partition("\n")
    except (OSError, ValueError):  # (none, or another folder's that cannot be read, not UTF-8)
        return None
    written_in = written_in.removesuffix("\n")
    return (run_id.strip(), Path(written_in) if written_in else run_dir) if run_id.strip() \
        else None


def replay_history(logger: WandbLogger, rows: list[dict]) -> None:
    """Log the resumed run's history (``metrics.csv`` rows) into a W&B run that does not hold
    it, as the training logged it: a new run (a resume into another ``--out``), or an offline
    one — W&B cannot resume offline runs: the resume's ``offline-run-*`` folder starts a
    history of its own, which replaces the first folder's when both are synced. A count the
    training logged as an integer (``params/maskable``, ``epoch``; the CSV writes it without a
    point) is logged as one again, not as a float. Rows of numbers (a stack member's history,
    as it logged them) are logged as they are."""
    for row in rows:
        metrics = {k: logged_number(v) if isinstance(v, str) else v for k, v in row.items()
                   if v not in ("", None) and k != "step"}
        logger.log_metrics(metrics, step=int(float(row.get("step") or 0)))


def logged_number(text: str) -> int | float:
    """A ``metrics.csv`` value as the training logged it: ``1991420`` an int, ``0.5``,
    ``1.0``, ``1e-05`` or ``nan`` a float."""
    try:
        return int(text)
    except ValueError:
        return float(text)


class RunWandbLogger(WandbLogger):
    """Lightning's W&B logger with one config: the run's, given at creation. Lightning's own
    hyperparameter dump (the module's model spec, optimizer settings and the run config again,
    nested) is not logged over it. Nor does it give ``wandb.init`` Lightning's ``anonymous``
    setting, which W&B no longer reads: W&B printed "The anonymous setting has no effect and
    will be removed in a future version" at every run's start; nor, under a W&B sweep agent,
    the project, entity and id that W&B takes from the agent. Its W&B run is its own, beside
    any the user has open (``wandb.init`` in a notebook before the run): Lightning's logger
    took that one over ("There is a wandb run already in progress ... will reuse this run"),
    logged the run into it, finished it, and kept another id in ``RUN/wandb-id``."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._wandb_init.pop("anonymous", None)  # (a later Lightning may not give it)
        if os.environ.get("WANDB_SWEEP_ID"):  # a W&B agent's run: W&B takes its project,
            # entity and id from the agent, and warned at every cell's start "Ignoring
            # project 'lotterynet' when running a sweep." (and its run_id, the agent's own)
            for key in ("project", "entity", "id"):
                self._wandb_init.pop(key, None)

    @property
    @rank_zero_experiment
    def experiment(self):
        """Lightning's; where the user has a W&B run open, started with
        ``reinit="create_new"`` (wandb >= 0.19.10): a new run, which leaves the user's open and
        ``wandb.run`` as they were; with Lightning's x-axis for every metric. Where none is
        open, it is ``wandb.run`` while it lasts, as Lightning's (a callback's own
        ``wandb.log`` goes into it). A logger unpickled in another process attaches to its
        run, as Lightning's. Its debug log drops what it cannot write
        (:func:`quietly_started`)."""
        import wandb

        parent = super()
        if self._experiment is not None:
            return parent.experiment

        def start():
            if getattr(self, "_attach_id", None) is None and wandb.run is not None:
                run = wandb.init(**self._wandb_init, reinit="create_new")
                run.define_metric("trainer/global_step")
                run.define_metric("*", step_metric="trainer/global_step", step_sync=True)
                self._experiment = run
            return parent.experiment

        return quietly_started(start)

    def log_hyperparams(self, params) -> None:
        pass


def quietly_started(start: Callable):
    """The W&B run that ``start()`` starts (``wandb.init``), whose debug log drops the records
    it cannot write (:func:`quiet_debug_log`): as it starts, which writes to it before the
    run is there, Python's logging says nothing of a record a handler fails to write
    (``logging.raiseExceptions`` off, then as it was)."""
    said = logging.raiseExceptions
    logging.raiseExceptions = False
    try:
        run = start()
    finally:
        logging.raiseExceptions = said
    quiet_debug_log(run)
    return run


def quiet_debug_log(run) -> None:
    """W&B's debug log of its ``run`` (``debug.log``: a handler of the ``wandb`` logger that
    W&B adds for that run alone and removes as it ends) drops the records it cannot write: on
    a full disk, Python's logging printed "--- Logging error ---" and a traceback for each
    (some 11,000 lines before the run's one-line error). A file the run cannot write says
    the disk is full itself (:class:`~lotterynet.errors.WriteFailed`), W&B's run files
    W&B's failure (:func:`reporting_wandb_failure`). Other handlers are left as they are."""
    log = os.path.abspath(run.settings.log_user)
    for handler in logging.getLogger("wandb").handlers:
        if getattr(handler, "baseFilename", None) == log:
            handler.handleError = unwritten


def unwritten(record: logging.LogRecord) -> None:
    """A log record that could not be written: dropped (:func:`quiet_debug_log`)."""


#: The W&B job type of a sweep's cell's own run, single or a stack member's, beside a stack's
#: (``stack``) and a sweep's summary run (``sweep-summary``): W&B's runs table groups or filters
#: a sweep's group by it, its cells apart from the runs that span several.
CELL_JOB = "cell"


def wandb_config(config: dict) -> dict:
    """What a W&B run's config shows: what the run computes, without where its files go or
    how it is logged (``out``, ``overwrite``, ``progress_bar``, the W&B options, …)."""
    from .config import OUTPUT_ONLY

    return {k: v for k, v in config.items() if k not in (*OUTPUT_ONLY, "data_dir", "download")}


def wandb_options(config: dict) -> dict:
    """Where a W&B run of ``config`` goes (``wandb.init``'s keywords): project, group,
    entity, tags, notes and mode — for a run, a stack and a sweep's summary alike."""
    option = partial(config_value, config)  # (a sweep's base has only the fields it sets)
    tags = [t.strip() for t in (option("wandb_tags") or "").split(",") if t.strip()]
    return {"project": option("wandb_project"), "group": option("wandb_group"),
            "entity": option("wandb_entity"), "tags": tags or None,
            "notes": option("wandb_notes"), "mode": wandb_mode()}


def wandb_dir(folder: Path) -> str:
    """Where W&B writes a run's files (its ``wandb/`` folder): ``$WANDB_DIR`` where it is set,
    as W&B documents it, else ``folder`` (the run's, a sweep's for its summary run); created
    here where it is not yet (a new ``$WANDB_DIR``, which the config checks could be made:
    W&B made it itself, after warning "git root ... does not exist")."""
    where = os.environ.get("WANDB_DIR") or str(folder)
    os.makedirs(where, exist_ok=True)
    return where


def make_loggers(run_dir: Path, config: dict, resumed: Resumed | None = None,
                 job_type: str | None = None, replay: bool = False) -> list[Logger]:
    """The CSV log (continuing the history of the ``resumed`` checkpoint's run) and, on
    request, W&B (continuing that run's W&B id, kept in ``run_dir`` wherever W&B writes), with
    ``config`` (the run's, flat) as the W&B run's config and ``job_type`` as its job type. W&B
    writes into ``$WANDB_DIR`` where it is set, else into ``run_dir``. The resumed history is
    replayed into a W&B run that does not hold it (:func:`replay_history`), and with
    ``replay`` into one it continues on a server too: a stack member's run, which never
    logged it live, and which continues the id its cell keeps (a first logging of it failed
    or was stopped)."""
    history = resumed_history(resumed)
    loggers: list[Logger] = [HistoryCSVLogger(run_dir, history)]
    if config["wandb"]:
        run_id, continued = wandb_run_id(run_dir, resumed[0] if resumed else None, replay)
        options = wandb_options(config)
        wandb_logger = RunWandbLogger(
            name=run_dir.name, save_dir=wandb_dir(run_dir),
            config=wandb_config(config), id=run_id, resume="allow", job_type=job_type,
            log_model=bool(config.get("log_model")), **options)
        wandb_logger.replays_history = replay or not (
            continued and options["mode"] in WANDB_SERVER_MODES)  # (else the server has it)
        if wandb_logger.replays_history:
            with ending_wandb_on_failure(partial(end_open_wandb, [wandb_logger])):
                replay_history(wandb_logger, history)
        loggers.append(wandb_logger)
    return loggers


def finish_wandb(loggers: list[Logger], summary: dict, tickets: dict[str, Path] | None = None,
                 exit_code: int = 0, checkpoint: Path | None = None) -> str | None:
    """Write ``summary`` into the W&B run's summary, log ``checkpoint`` (a file no Trainer of
    this run saved: a stack member's, ``--log-model``) as Lightning logs a run's own
    (``model-<run id>``, its file ``model.ckpt``), log each of ``tickets`` (files) as a
    model artifact (``ticket-<run id>`` for the run's own, keyed ``""``; ``ticket-<run
    id>-<member>`` for a stack member's, keyed by its name, its ``<member>/…`` summary as
    metadata), close the run with ``exit_code`` (that of the command: an interrupted run's
    130 or 143, which W&B otherwise recorded as Lightning's exit 1, a failure); returns its
    directory once its record log is complete. Only rank 0 holds a real W&B run (other DDP
    ranks get Lightning's dummy)."""
    for logger in loggers:
        if isinstance(logger, WandbLogger) and rank_zero_only.rank == 0:
            import wandb

            run = logger.experiment
            with ending_wandb_on_failure(partial(end_open_wandb, [logger])):
                run.summary.update(summary)
                if checkpoint is not None:  # (Lightning's aliases: its one checkpoint is
                    # the run's last and, monitoring nothing, its best)
                    artifact = wandb.Artifact(f"model-{run.id}", type="model",
                                              metadata={"original_filename": checkpoint.name})
                    artifact.add_file(str(checkpoint), name="model.ckpt")
                    run.log_artifact(artifact, aliases=["latest", "best"])
                for member, ticket in (tickets or {}).items():
                    prefix = f"{member}/" if member else ""
                    metadata = {k.removeprefix(prefix): v for k, v in summary.items()
                                if k.startswith(prefix)}
                    artifact = wandb.Artifact(f"ticket-{run.id}" + f"-{member}" * bool(member),
                                              type="model", metadata=metadata)
                    artifact.add_file(str(ticket))
                    run.log_artifact(artifact, aliases=["latest", "final"])
            logger.closed = True
            return close_wandb_run(run, exit_code)
    return None


def end_open_wandb(loggers: list[Logger], exit_code: int) -> None:
    """Close with ``exit_code`` (a stop's 130 or 143, a divergence's 3, memory's 4 or another
    failure's 1: W&B marks those failed; a finished run's 0) the W&B run of ``loggers`` that
    started and is still open. One not started yet (a stop while the data is read) is left
    unstarted: starting it only to close it called ``wandb.init`` inside the stop; one that
    :func:`finish_wandb` closed (a stop while a stack logs its members) is left closed: closing
    it again raised W&B's error in place of the stop's line."""
    for logger in loggers:
        if isinstance(logger, WandbLogger) and logger._experiment is not None and not getattr(
                logger, "closed", False):
            logger.closed = True
            close_wandb_run(logger.experiment, exit_code)


@contextlib.contextmanager
def ending_wandb_on_failure(end: Callable[[int], object]):
    """Whatever fails or stops inside the block, once a W&B run has started, ends that run
    before it is raised, as it was: ``end`` (:func:`end_open_wandb` of the run's loggers,
    or :func:`close_wandb_run` of the run) is given the exit code the command exits with for
    it (:func:`~lotterynet.errors.exit_code`: a stop's 130 or 143, an error's 1; W&B marks
    the run failed). Left open, the run ended only with the process (in a sweep's, the next
    cell's ``wandb.init`` took it over), and its offline folder had no exit record."""
    try:
        yield
    except BaseException as err:
        end(exit_code(err))
        raise


@contextlib.contextmanager
def ending_wandb_runs(loggers: list[Logger]):
    """Whatever ends a run or a stack early (a stop, memory running out, a divergence, W&B's
    own error in the fit) ends the W&B runs it logs to inside the block
    (:func:`ending_wandb_on_failure` of :func:`end_open_wandb`), with the command's exit code
    (around its ``reporting_interrupts``: a stop's 130 or 143, not Lightning's exit 1): those
    of ``loggers``, its own, from the moment they are made (a resume's, which replayed its
    history into it, has started), then those of the list it yields once the block has set
    it to its Trainer's loggers (``logged_to[:] = trainer.loggers``): its own and a W&B
    logger of the user's Trainer options. Left open, one was closed at the process's exit as
    finished, and a sweep's next cell in the same process logged into it (``wandb.init``
    returns the run in progress)."""
    logged_to = list(loggers)
    with ending_wandb_on_failure(partial(end_open_wandb, logged_to)):
        yield logged_to


@contextlib.contextmanager
def reporting_wandb_failure(failed: str, then: Callable[[], str]):
    """W&B's own errors inside the block (``wandb.errors.Error``: its server refusing or out
    of reach, an upload failing, a setting it refuses at ``wandb.init``; an OSError raised in
    W&B's code, :func:`raised_in_wandb`: its folder not writable, the disk full under it; a
    file in the way of its folder keeps its own line, :data:`~lotterynet.errors.IN_THE_WAY`) as
    one line, :class:`~lotterynet.errors.WandbFailed`: ``failed`` (what W&B failed to log),
    W&B's reason, then ``then()`` (what is kept and how to go on, as it is when W&B failed).
    A full disk in lotterynet's own writes is reported as such. Without wandb loaded (nor
    installed: W&B not asked for), nothing raised is W&B's."""
    try:
        yield
    except Exception as err:
        errors = sys.modules.get("wandb.errors")
        if errors is None or not (isinstance(err, errors.Error) or isinstance(err, OSError)
                                  and not isinstance(err, IN_THE_WAY) and raised_in_wandb(err)):
            raise
        raise WandbFailed(f"{failed} ({first_line(err)}); {then()}") from None


def raised_in_wandb(err: BaseException) -> bool:
    """Whether W&B's code is on the way to where ``err`` was raised: its OSErrors were
    tracebacks (a folder W&B may not write in, at ``wandb.init``; the disk full as
    ``run.finish()`` closes its log, after the run had been trained and saved)."""
    frame = err.__traceback__
    while frame is not None:
        if frame.tb_frame.f_globals.get("__name__", "").partition(".")[0] == "wandb":
            return True
        frame = frame.tb_next
    return False


def wandb_sync(folder: Path) -> str:
    """The ``wandb sync`` command that uploads the W&B runs of ``folder`` (a run's, a cell's:
    every ``*-ID`` folder of its id, oldest first, as a resumed offline run's are), where
    W&B writes them (:func:`wandb_dir`)."""
    where = Path(wandb_dir(folder)) / "wandb"
    return f"`wandb sync {shlex.quote(str(where))}/*-{own_wandb_id(Path(folder).resolve())}`"


def close_wandb_run(run, exit_code: int = 0) -> str | None:
    """Finish the W&B ``run`` with ``exit_code``; its directory once its record log is
    complete (None for a disabled run, which writes nothing)."""
    run_dir = Path(run.dir).parent
    run.finish(exit_code=exit_code)
    if run.settings.mode == "disabled":  # ($WANDB_MODE, a settings file)
        return None
    wait_for_record_log(run_dir)
    return str(run_dir)


def wait_for_record_log(run_dir: Path, timeout: float = 60.0) -> None:
    """Wait until the run's ``run-*.wandb`` ends with its ``exit`` record: ``run.finish()``
    can return while W&B's writer still holds the last block of the file, so a reader right
    after it would miss the summary (``wandb sync`` too)."""
    from google.protobuf.message import DecodeError  # wandb's dependency, as wandb is ours here

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for log in run_dir.glob("run-*.wandb"):
            try:
                last = None
                for record in read_wandb_records(log):
                    last = record.WhichOneof("record_type")
            except (ValueError, DecodeError):  # caught mid-write
                last = None
            if last == "exit":
                return
        time.sleep(0.1)


def read_wandb_records(path: str | Path):
    """The protobuf records of a ``run-*.wandb`` file (W&B's LevelDB-style log: a 7-byte file
    header, then 32 KiB blocks of chunks, each with a 7-byte header ``<crc32, length, type>``;
    type 1 = whole record, 2/3/4 = first/middle/last piece). Lets offline runs be inspected
    without uploading them."""
    from wandb.proto import wandb_internal_pb2

    block, header = 32768, struct.Struct("<IHB")
    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B record log")
    pos, pieces = 7, b""
    while pos + header.size <= len(data):
        left_in_block = block - pos % block
        if left_in_block < header.size:  # block trailer padding
            pos += left_in_block
            continue
        _, length, kind = header.unpack_from(data, pos)
        if kind == 0:
            break
        pieces += data[pos + header.size:pos + header.size + length]
        pos += header.size + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pieces)
            pieces = b""
            yield record


def read_wandb_summary(path: str | Path) -> dict:
    """Final summary of a ``run-*.wandb`` file: the last value of every logged key (history
    rows and explicit summary updates)."""
    summary: dict = {}
    for record in read_wandb_records(path):
        kind = record.WhichOneof("record_type")
        items = (record.history.item if kind == "history"
                 else record.summary.update if kind == "summary" else [])
        for item in items:
            key = item.key or "/".join(item.nested_key)
            summary[key] = json.loads(item.value_json)
    return summary
