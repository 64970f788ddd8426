"""A run's folder: where it is (:func:`run_dir_of`: ``--out``, the ``--resume`` checkpoint's run or
a name made of the config), claiming it (:func:`claim_run_dir`: refused where the run would
destroy or mix up another) and holding it while the run writes (:func:`holding`,
:func:`locked`), clearing what ``--overwrite`` replaces (:func:`clear_previous_run`), what a
run stopped before its first checkpoint leaves there (:func:`left_before_a_checkpoint`), and
the files a run ends with: its ticket (:func:`write_ticket`) and its ``results.json``, read
and compared with a config (:func:`read_results`, :func:`results_differ`) and written
atomically (:func:`write_json_atomic`)."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import secrets
from pathlib import Path

import torch
import yaml

from .checkpointing import (
    CHECKPOINTS,
    LAST,
    Resumed,
    checkpoint_run_dir,
    stored_config,
    write_text_atomic,
)
from .config import NOT_COMPUTED, changed_fields
from .config_schema import WIDE, RunConfig
from .config_yaml import MAX_FILE_BYTES, refuse_larger_than
from .errors import ConfigError, resume_flag
from .loggers import METRICS_FILE, WANDB_ENDED_FILE, WANDB_ID_FILE
from .machine import is_launched_worker, read_text_within_memory
from .masking import masked_weights
from .path_checks import check_not_folders, check_output_dir
from .resumable import is_real
from .sweep_grid import SWEEP_FILE, SWEEP_LOCK, in_a_folder_name
from .ticket import save_ticket
from .ticket_file import TICKET

try:
    import fcntl
except ImportError:  # (Windows: no flock, see flocked)
    fcntl = None

RESULTS = "results.json"
HPARAMS = "hparams.yaml"  # (Lightning's CSV logger's: the module's hyperparameters)
_RUN_ID = re.compile(r"[0-9a-f]{16}")  # (new_run_id's)
#: The files a run (or a stack's cell) writes when it ends: a folder in the place of one is
#: refused before the training (:func:`~lotterynet.path_checks.check_not_folders`).
END_FILES = (RESULTS, TICKET)
#: What a run stopped before its first checkpoint leaves in its folder, its files and folders
#: (``wandb/``: W&B's, where it writes there), as a stack's member that diverged leaves its
#: cell (its W&B run's end, ``wandb-ended``): :func:`left_before_a_checkpoint`.
LEFT_BEFORE_A_CHECKPOINT = {METRICS_FILE: False, "hparams.yaml": False, WANDB_ID_FILE: False,
                            WANDB_ENDED_FILE: False, CHECKPOINTS: True, "wandb": True}


def default_run_dir(config: RunConfig) -> Path:
    kind = "trained" if config.train_weights else config.structure
    if config.structure == WIDE and not config.train_weights:
        kind = f"wide-{config.match}"
    return Path("runs") / (f"{in_a_folder_name(config.arch)}-{kind}-s{config.sparsity:g}-"
                           f"{config.activation}-e{config.epochs}-seed{config.seed}")


def run_dir_of(config: RunConfig) -> Path:
    """``--out``, else the run that holds the ``--resume`` checkpoint, else the default name. A
    path stored inside a checkpoint never decides where files go."""
    if config.out:
        return Path(config.out)
    if config.resume:
        return checkpoint_run_dir(config.resume)
    return default_run_dir(config)


def resumed_out(config: RunConfig, resumed: Resumed) -> str | None:
    """The ``out`` of a resume given none, which goes on in its checkpoint's run folder: the
    ``out`` of that run (in the ``resumed`` checkpoint's config) where it names the folder from
    here, so that the resume records (in ``results.json``, its checkpoints) what the
    uninterrupted run did; else (a run moved, resumed from another directory) the folder."""
    path, loaded = resumed
    run_dir, out = checkpoint_run_dir(path), stored_config(loaded, path).get("out")
    return out if Path(out or default_run_dir(config)).resolve() == run_dir else str(run_dir)


def claim_run_dir(run_dir: Path, config: RunConfig) -> None:
    """Refuse to write where it would destroy or mix up a run: into a directory that holds
    another run (unless ``overwrite``), or on from a finished run. A resume writes into the run
    it continues (from that run's last checkpoint), or into an empty ``--out``. A new run
    starts over in the folder of one stopped before its first checkpoint
    (:func:`left_before_a_checkpoint`), as its stop line says."""
    if is_launched_worker():
        return
    # (a resume into the run it continues: no --out given, or that run's folder)
    resuming = config.resume and run_dir.resolve() == checkpoint_run_dir(config.resume)
    flag, instead = ((f"--resume {config.resume!r}", "resume into an empty --out") if resuming
                     else ("--out", "choose another folder"))
    check_output_dir(run_dir, f"{flag}: its run folder" if resuming else flag, instead)
    if (run_dir / CHECKPOINTS).is_dir():  # (one not writable was refused at the first
        # checkpoint, its epoch trained for nothing)
        check_output_dir(run_dir / CHECKPOINTS, f"{flag}: its {CHECKPOINTS} folder", instead)
    check_not_folders(run_dir / file for file in (*END_FILES, METRICS_FILE))  # (its history)
    sweep = next((name for name in (SWEEP_FILE, SWEEP_LOCK) if (run_dir / name).exists()), None)
    if sweep is not None:
        raise ConfigError(f"--out {str(run_dir)!r} is a sweep's folder ({sweep} is there): a run "
                          f"there would be mixed with its cells, and --overwrite would clear "
                          f"them; choose another --out")
    if config.resume:
        source = checkpoint_run_dir(config.resume)
        if (source / RESULTS).is_file():
            raise ConfigError(f"run {str(source)!r} is finished ({RESULTS} is there); "
                              f"there is nothing to resume: start a new run with --out")
        last, into_source = source / CHECKPOINTS / LAST, run_dir.resolve() == source
        if not into_source and (run_dir / RESULTS).is_file():  # (the run resumed is not)
            raise ConfigError(f"--out {str(run_dir)!r} holds a finished run ({RESULTS} is "
                              f"there); resume into the run {str(source)!r} itself or into "
                              f"an empty --out")
        if into_source and Path(config.resume).resolve().parent.name != CHECKPOINTS:
            raise ConfigError(f"--resume {config.resume!r} is not in a run's {CHECKPOINTS}/ "
                              f"folder, so there is no run to continue it in (its history is "
                              f"the run's); give an empty --out")
        if into_source and Path(config.resume).resolve() != last.resolve():
            raise ConfigError(f"--resume {config.resume!r} is not the last checkpoint of run "
                              f"{str(source)!r} ({str(last)!r}); continued there, it would cut "
                              f"the run's history back to it and replace its last checkpoint: "
                              f"give an empty --out")
        if into_source or not holds_files(run_dir):
            return
        raise ConfigError(f"--out {str(run_dir)!r} holds another run; resume into the run "
                          f"{str(source)!r} itself or into an empty --out")
    if config.overwrite or not holds_files(run_dir) or left_before_a_checkpoint(run_dir):
        return
    last, done = run_dir / CHECKPOINTS / LAST, (run_dir / RESULTS).is_file()
    resume = f"{resume_flag(last)}, " if last.is_file() and not done else ""
    finished = f" (a finished run: {RESULTS} is there)" if done else ""
    raise ConfigError(f"run directory {str(run_dir)!r} is not empty{finished}; pass "
                      f"--overwrite, {resume}or another --out")


@contextlib.contextmanager
def holding(run_dir: Path, config: RunConfig):
    """Create ``run_dir`` and hold an exclusive lock on it (``flock`` on the folder itself, so
    nothing is added to it; the system drops it when the process dies) while the block runs,
    then check again what :func:`claim_run_dir` checked before the data was loaded: two runs
    started into one ``--out`` at once would both have passed that check and written into each
    other's files. The one that comes second is refused (exit 2)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if is_launched_worker():  # rank 0 holds it for every rank
        yield
        return
    with locked(run_dir, f"run directory {str(run_dir)!r} is in use by another run; wait for "
                         f"it, or choose another --out"):
        claim_run_dir(run_dir, config)
        yield


@contextlib.contextmanager
def locked(folder: Path, busy: str):
    """An exclusive ``flock`` on ``folder`` itself (nothing is added to it; the system drops
    it when the process dies) while the block runs; :class:`ConfigError` ``busy`` when another
    process holds it, or has just moved it away. Nothing is locked where there is no ``flock``
    (:func:`flocked`; Windows, which opens no folder either)."""
    if fcntl is None:
        yield
        return
    try:
        handle = os.open(folder, os.O_RDONLY)
    except FileNotFoundError:
        raise ConfigError(busy) from None
    try:
        if not flocked(handle):
            raise ConfigError(busy)
        yield
    finally:
        os.close(handle)  # and with it the lock


def flocked(file, shared: bool = False) -> bool:
    """Lock ``file`` (a descriptor or an open file) exclusively, or ``shared``, until it is
    closed, without waiting; False where another process holds it. Where the system has no
    ``flock`` (Windows) nothing is locked and it returns True: there, runs and sweeps are not
    kept from writing into one folder at once (README: Platforms)."""
    if fcntl is None:
        return True
    try:
        fcntl.flock(file, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def clear_previous_run(run_dir: Path) -> None:
    """``--overwrite``: remove the previous run's result, ticket, checkpoint and W&B run id, so
    that the folder holds the new run alone — finished only when it finishes, resumable from its
    own checkpoint if stopped before, never logging into the old run's W&B history (its
    ``metrics.csv`` starts anew with it)."""
    for name in (*END_FILES, f"{CHECKPOINTS}/{LAST}", WANDB_ID_FILE, WANDB_ENDED_FILE):
        (run_dir / name).unlink(missing_ok=True)


def new_run_id() -> str:
    """A new run's id (:func:`check_own_run`): 16 random hex digits."""
    return secrets.token_hex(8)


def stored_run_id(hyper_parameters) -> str | None:
    """The run id (:class:`~lotterynet.module.EdgePopupModule`'s ``run_id``) in a checkpoint
    or in the mapping of a run folder's ``hparams.yaml``; None where there is none (written
    before runs had ids, or not by ``train.py``) or none whole (a file cut short)."""
    if isinstance(hyper_parameters, dict) and "state_dict" in hyper_parameters:
        hyper_parameters = hyper_parameters.get("hyper_parameters")
    run_id = hyper_parameters.get("run_id") if isinstance(hyper_parameters, dict) else None
    return run_id if isinstance(run_id, str) and _RUN_ID.fullmatch(run_id) else None


def folder_run_id(run_dir: Path) -> str | None:
    """The run id in ``run_dir``'s ``hparams.yaml`` (written as each fit of its run starts);
    None without one, or where the file cannot be read (cut short by a kill as Lightning
    rewrote it). One larger than :data:`~lotterynet.config_yaml.MAX_FILE_BYTES` (train.py
    writes the run's options there, a few KB) is refused unread, a :class:`ConfigError`: its
    parse took 20 s for 3 MB, and taking its run id as unknown would skip the check of
    :func:`check_own_run`."""
    path = run_dir / HPARAMS
    try:
        refuse_larger_than(path, f"the run's {HPARAMS} {str(path)!r}", MAX_FILE_BYTES,
                           f"a run's {HPARAMS}")
        return stored_run_id(yaml.safe_load(read_text_within_memory(path, HPARAMS, OSError)))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None


def check_own_run(resumed: Resumed | None) -> None:
    """The ``resumed`` checkpoint must be of the run whose folder holds it (whose history
    a resume carries on, :func:`~lotterynet.loggers.resumed_history`, and which a resume
    without ``--out`` continues): another run's copied there would train on from the other
    run's weights under this run's history, the epochs of both mixed. Both keep their run's
    id (a run folder copied or moved whole keeps its own); a checkpoint or a folder without
    one (written before runs had ids) is taken as the folder's."""
    if not resumed or is_launched_worker():
        return
    path, loaded = resumed
    source = checkpoint_run_dir(path)
    ours, theirs = folder_run_id(source), stored_run_id(loaded)
    if ours is None or theirs is None or ours == theirs:
        return
    origin = stored_config(loaded, path).get("out")
    where = f"of the run started in {origin!r}" if origin else "of another run"
    raise ConfigError(f"--resume {str(path)!r} is a checkpoint {where} (run {theirs}), not of "
                      f"the run in {str(source)!r} (run {ours}, its {HPARAMS}), copied there: "
                      f"resume it from its own run's folder, or from a copy outside any run's "
                      f"folder into an empty --out; to continue the run in {str(source)!r}, "
                      f"put its own checkpoint back")


def write_ticket(model: torch.nn.Module, run_dir: Path) -> Path | None:
    """``RUN/model.ticket``, the trained subnetwork (1-bit masks + trained tensors + spec,
    :func:`~lotterynet.ticket.save_ticket`; its W&B model artifact), or None for a model with
    no masks (the trained baseline)."""
    if not masked_weights(model):
        return None
    save_ticket(model, run_dir / TICKET)
    return run_dir / TICKET


def holds_files(folder: Path) -> bool:
    return folder.is_dir() and any(folder.iterdir())


def left_before_a_checkpoint(run_dir: Path, resumed_epochs: int = 0) -> bool:
    """``run_dir`` holds only what a run stopped before its first checkpoint leaves
    (:data:`LEFT_BEFORE_A_CHECKPOINT`): ``hparams.yaml`` (written as its fit starts) with a
    history of no epoch past the one it was training (its rows are logged before its
    checkpoint is written; ``resumed_epochs``: the epochs of the checkpoint it was resumed
    from, whose history it carries, 0 for a new run), its W&B id and files, an empty
    ``checkpoints/``; without ``hparams.yaml`` (stopped or failed before its fit: W&B refusing
    to start), a history of the parameter counts it logs before it alone
    (:func:`~lotterynet.run.params_metrics`, at step 0). There is nothing to resume, and a new
    run there starts over (the W&B files stay). Anything else, a file of the user's, a history
    alone (a header alone holds nothing to keep) or one past that epoch whose checkpoint is
    gone, is kept: the folder is not taken."""
    entries = list(run_dir.iterdir())
    if not all(LEFT_BEFORE_A_CHECKPOINT.get(entry.name) == entry.is_dir() and not
               entry.is_symlink() for entry in entries) or holds_files(run_dir / CHECKPOINTS):
        return False
    try:
        with open(run_dir / METRICS_FILE, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            rows = [(row.get("epoch"), row.get("step")) for row in reader]
            columns = reader.fieldnames or []
    except FileNotFoundError:
        return True
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    if not (run_dir / "hparams.yaml").exists():  # (a history of the counts alone, at step 0)
        counts = [c for c in columns if c != "step"]  # (params_metrics')
        only_counts = bool(counts) and all(c.startswith(("params/", "density/")) for c in counts)
        return not rows or only_counts and all(step == "0" for _, step in rows)
    return all(epoch in (None, "") or epoch.isdigit() and int(epoch) <= resumed_epochs
               for epoch, _ in rows)


def read_json(path: Path) -> dict:
    """The mapping in a JSON file; a missing or unreadable file reads as empty, as does one
    larger than the memory (read whole, it was a MemoryError's traceback)."""
    try:
        data = json.loads(read_text_within_memory(path, str(path), OSError))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read_results(run_dir: Path) -> dict | None:
    """``run_dir``'s ``results.json``: None where there is none; one not readable as a mapping
    reads as empty."""
    return read_json(run_dir / RESULTS) if (run_dir / RESULTS).is_file() else None


def changed_results(config: RunConfig, run_dir: Path) -> list[str] | None:
    """The fields in which the finished run in ``run_dir`` (its ``results.json``) differs from
    ``config`` (:func:`results_differ`)."""
    return results_differ(config, read_results(run_dir))


def results_differ(config: RunConfig, results: dict | None) -> list[str] | None:
    """The fields in which a run's ``results`` (as :func:`read_results` read them) differ from
    ``config``: empty when they are ``config``'s run's, None when there are none. Results
    without a test accuracy in [0, 1] (damaged, hand-edited) differ in ``test_acc``: they are
    no finished run's."""
    if results is None:
        return None
    acc = results.get("test_acc")
    if not (is_real(acc) and 0 <= acc <= 1):
        return ["test_acc"]
    return changed_fields(results.get("config", {}), config.to_dict(), NOT_COMPUTED)


def write_json_atomic(obj, path: Path) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2) + "\n")
