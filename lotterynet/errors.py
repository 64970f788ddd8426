"""The errors ``train.py`` reports as one line on stderr (exit code 2 for bad input; 1 for a
full disk or W&B's own failure, 3 for a run that diverged, 4 for one that ran out of memory;
130 / 143 for a run stopped by Ctrl-C / SIGTERM).

They live apart from the code that raises them so that the command line can catch them
without importing torch or Lightning: a bad flag or config file is refused in a fraction of a
second, before the heavy imports.
"""


import argparse
import contextlib
import os
import re
import shlex
import signal
import sys
from collections.abc import Callable


def encodable_output() -> None:
    """Make ``sys.stdout`` write a character its encoding lacks as a backslash escape
    (``\\u03b3``) instead of raising, as ``sys.stderr`` does already: under a Windows console's
    or a redirected output's cp1252 (the locale, ``PYTHONIOENCODING``), the ``γ``, ``≤`` and
    ``ℓ`` of a table, a ``--help`` or a path were a UnicodeEncodeError's traceback, after the
    work was done. Called as each command starts (``train.py``, ``python -m
    lotterynet.approximate``, ``lotterynet.targets``, ``lotterynet.theory``); a stream that
    already handles them (``surrogateescape`` under the C locale) is left as it is."""
    if getattr(sys.stdout, "errors", None) == "strict" and hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="backslashreplace")


class OneLineErrorParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (no usage block), exit code 2. An empty
    value (``--out ""``, ``--out=``) is refused: a path flag would otherwise silently mean the
    current folder, a name flag the default. A value given to a flag that takes none
    (``--baseline maybe``, ``--baseline=maybe``) is refused naming the flag and its forms
    (argparse said "unrecognized arguments: maybe", or "ignored explicit argument"). A value
    that begins as a negative number is a value (``--sweep-seeds -1,2``, ``--lr -1e-3``):
    argparse took all but ``-1`` and ``-0.5`` for flags, and said "argument --sweep-seeds:
    expected one argument", naming neither the value nor the ``--sweep-seeds=-1,2`` form; so
    it said for any other value that begins with ``-`` (``--out -x``): such a value, given to
    a flag that takes one, is refused naming the flag and the ``--out=-x`` form, which
    argparse reads as the value."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # (argparse's own test of what "looks like a negative number", which it reads as a
        # value while no flag of the parser looks like one: here none does)
        self._negative_number_matcher = re.compile(r"^-\.?\d")

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {escape_line_breaks(self.typed(message))}\n")

    #: argparse's line for a value its ``type=int`` / ``float`` cannot read.
    NOT_READ = re.compile(r"^argument (?P<flags>[^:]+): invalid (?P<type>int|float) value: "
                          r"(?P<value>.+)$")

    def typed(self, message: str) -> str:
        """argparse's "argument --sparsity: invalid float value: 'abc'" names the value but
        not what the flag takes: "--sparsity 'abc' is not a number: " and the flag's help
        (its range, where it has one; its default)."""
        match = self.NOT_READ.match(message)
        if match is None:
            return message
        flag = match["flags"].split("/")[-1]
        kind = {"int": "an integer", "float": "a number"}[match["type"]]
        action = self._option_string_actions.get(flag)
        takes = action and action.help and self._get_formatter()._expand_help(action)
        return f"{flag} {match['value']} is not {kind}" + (f": {takes}" if takes else "")

    def parse_known_args(self, args=None, namespace=None):
        args = sys.argv[1:] if args is None else list(args)
        for before, arg in zip(["", *args], args):
            flag, equals, value = arg.partition("=")  # (--out=runs/a= is a value)
            if arg.startswith("--") and equals and not value:  # --out=
                self.error(f"{flag} is empty; leave it out for its default")
            if arg == "" and before.startswith("-") and before != "--":  # --out ""
                self.error(f"{before} is empty; leave it out for its default")
            if arg == "":
                self.error("an argument is empty (''); drop it or fill it in")
            if arg.startswith("--") and equals:  # --baseline=maybe
                self.refuse_a_value(flag, value)
            self.refuse_a_flag_as_value(before, arg)
        namespace, extras = super().parse_known_args(args, namespace)
        for before, arg in zip(args, args[1:]):  # --baseline maybe (maybe left over)
            if arg in extras:
                self.refuse_a_value(before, arg)
        return namespace, extras

    def refuse_a_flag_as_value(self, flag: str, value: str) -> None:
        """Refuse ``value`` after ``flag``, a flag that takes one value or a list (or an
        abbreviation of one, as argparse reads it: ``--ou`` for ``--out``), where argparse
        would read it as a flag (it begins with one ``-``, and is no flag of the parser, nor a
        negative number, nor holds a space): it said "argument --out: expected one
        argument" (a list's: "expected at least one argument")."""
        full = self.flag_read_as(flag)
        action = self._option_string_actions.get(full)
        if (action is not None and action.nargs in (None, "+") and value.startswith("-")
                and not value.startswith("--") and value != "-" and " " not in value
                and value not in self._option_string_actions
                and not self._negative_number_matcher.match(value)):
            self.error(f"{flag} {value}: {value!r} begins with '-' and reads as a flag, not as "
                       f"{full}'s value; to give it, write {full}={value}")

    def flag_read_as(self, flag: str) -> str:
        """The flag of the parser that argparse reads ``flag`` as: itself, or the one long flag
        it abbreviates (``--ou``: ``--out``, where no other begins so); ``flag`` where none."""
        if flag in self._option_string_actions or not (self.allow_abbrev
                                                       and flag.startswith("--")):
            return flag
        longer = [name for name in self._option_string_actions if name.startswith(flag)]
        return longer[0] if len(longer) == 1 else flag

    def refuse_a_value(self, flag: str, value: str) -> None:
        """Refuse ``value`` given to ``flag`` if that is a flag that takes no value."""
        action = self._option_string_actions.get(flag)
        if action is not None and action.nargs == 0:
            forms = " or ".join(action.option_strings) if len(action.option_strings) > 1 \
                else f"{flag} alone, or leave it out"
            self.error(f"{flag} takes no value, not {value!r}: give {forms}")


def flag_name(name: str) -> str:
    """The flag of the option ``name`` (``batch_size`` -> ``--batch-size``)."""
    return f"--{name.replace('_', '-')}"


def unread_option(args: argparse.Namespace, reads: dict[str, set[str]], command: str
                  ) -> str | None:
    """The refusal of the first option given (not None) that ``command`` does not read, or
    None; ``reads`` names the options each command reads: an option given to a command that
    does not read it is refused, not ignored."""
    given = sorted(k for k in set().union(*reads.values()) if getattr(args, k) is not None)
    unread = [k for k in given if k not in reads[command]]
    if not unread:
        return None
    flags = [flag_name(name) for name in (unread[0], *sorted(reads[command]))]
    return f"{flags[0]} is not read by {command}; it reads {', '.join(flags[1:])}"


class ConfigError(ValueError):
    """A bad configuration value; the message is one line naming the value and the choices."""


class CheckpointError(ValueError):
    """A checkpoint that is missing, truncated, corrupt or not a lotterynet checkpoint."""


class DatasetNotFound(FileNotFoundError):
    """The data set is neither on disk nor downloadable; the message says what to do. One that
    says where the data folder is set is made by :meth:`naming_data_dir`: its text names the
    Python argument (``TensorDataModule(data_dir=...)``), its ``command_line``, which a
    command reports (:func:`message`), the flag (``--data-dir``)."""

    def __init__(self, text: str, command_line: str | None = None):
        super().__init__(text)
        self.command_line = text if command_line is None else command_line

    @classmethod
    def naming_data_dir(cls, says) -> "DatasetNotFound":
        """The error whose text is ``says(setting)``, ``setting`` naming where the data folder is
        set: ``data_dir=`` in Python, ``--data-dir`` on a command's line."""
        return cls(says("data_dir="), says("--data-dir"))


class DatasetCorrupt(DatasetNotFound):
    """The data set's files are there but truncated or garbled: said as such, and not
    downloaded over (a download would hide what is wrong with them, or fail offline and
    report them missing)."""


class WriteFailed(OSError):
    """A file could not be written: a file size limit (``ulimit -f``: "File too large"), its
    folder made read-only or taken away, an I/O error; the previous version of the file is
    intact. Not bad input: the same command goes on where it can write (exit 1). ``then``:
    how the run, stack or sweep it ended goes on once it can, said after the file (its line,
    :func:`message`), None until one says it
    (:func:`~lotterynet.run_stops.reporting_write_failure`)."""

    then: str | None = None

    def said_after(self, text: str) -> str:
        """``text`` (what names the file), then ``then`` where one said it."""
        return f"{text}; {self.then}" if self.then else text

    def __str__(self) -> str:
        return self.said_after(super().__str__())


class DiskFullError(WriteFailed):
    """The disk (or the quota) filled while writing a file; the previous version of the file
    is intact."""


class TrainingDiverged(RuntimeError):
    """A run's trainable tensors stopped being finite (NaN or infinite): it is stopped at the
    end of that epoch, before its checkpoint, rather than finished with a meaningless result
    (a NaN score ranks below every other: its weight is pruned for good, silently).
    ``exit_code``: what ``train.py`` exits with, its own, by which a sweep tells a job that
    diverged (:func:`exit_code`)."""

    exit_code = 3


#: What the line of every :class:`TrainingDiverged` says, a run's or a stack member's, before
#: the epoch's number.
DIVERGED_IN = "diverged in epoch"


class OutOfMemory(RuntimeError):
    """Memory (the GPU's or the machine's) ran out while a run or a stack trained or tested:
    not bad input (the same run may fit elsewhere). ``exit_code``: its own, by which a sweep
    tells a job that ran out of memory (as :class:`TrainingDiverged`'s). Its parts:
    ``ran_out`` (what ran out of memory where), ``less`` (what needs less), ``then`` (how to go
    on where more memory is free) or, None, ``nothing`` (why there is nothing to go on from),
    so that a sweep can say its own ways for a cell it runs (:func:`~lotterynet.sweep.
    continued_by_the_sweep`)."""

    exit_code = 4

    def __init__(self, ran_out: str, less: str, then: str | None, nothing: str):
        super().__init__(ran_out, less, then, nothing)  # (as args: it pickles)

    def __str__(self) -> str:
        ran_out, less, then, nothing = self.args
        return f"{ran_out}; {less}, or {then} where more memory is free" if then else \
            f"{ran_out}; {less}; {nothing}"


def memory_refused(err: BaseException) -> str | None:
    """None unless ``err`` says memory ran out (a MemoryError, CUDA's OutOfMemoryError "...
    Tried to allocate 2.00 GiB", the CPU allocator's RuntimeError "... can't allocate memory:
    you tried to allocate N bytes"); then the size of the tensor refused, as " (one tensor
    alone: 2.0 GiB)" (:func:`in_binary_units`), or "" where it names none."""
    import torch  # (torch is imported by then: only training runs out of memory)

    asked = re.search(r"allocate (?:(\d+) bytes|([\d.]+ [KMGT]iB))", str(err))
    if not (asked or isinstance(err, MemoryError | torch.OutOfMemoryError)):
        return None
    if asked is None:
        return ""
    return f" (one tensor alone: {asked[2] or in_binary_units(int(asked[1]))})"


def python_value(value):
    """``value`` as a user writes it: a numpy scalar (``np.int64(-1)``, as numpy 2 shows it)
    as the Python value it holds (``-1``); anything else as it is."""
    numpy_scalar = type(value).__module__ == "numpy" and getattr(value, "shape", None) == ()
    return value.item() if numpy_scalar else value


def plural(count: int, noun: str) -> str:
    """``count`` and ``noun``, in the plural but for one: '1 epoch', '2 epochs', '4,000 cells'."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def in_binary_units(count: int) -> str:
    """``count`` bytes, one decimal, in the largest of KiB, MiB, GiB and TiB of which it is at
    least half (1048576: '1.0 MiB', not '0.0 GiB'); under 512, in bytes."""
    size, unit = float(count), "bytes"
    for larger in ("KiB", "MiB", "GiB", "TiB"):
        if size < 512:
            break
        size, unit = size / 1024, larger
    return f"{count} bytes" if unit == "bytes" else f"{size:,.1f} {unit}"


class Interrupted(RuntimeError):
    """A run stopped by Ctrl-C or SIGTERM (its last checkpoint stays). ``exit_code`` is what a
    shell reports for a process the signal ended, 128 + the signal's number, so that a batch
    scheduler or ``train.py && next`` sees a stopped run as not done (Lightning itself ends
    one stopped by SIGTERM with exit status 0). ``checkpoint_epochs``: the epochs that the
    run's own last checkpoint holds, where its trainer wrote or resumed it (what its resume
    line names), so that whoever catches the stop need not read the file again to say so;
    None where it did neither."""

    def __init__(self, message: str, exit_code: int, checkpoint_epochs: int | None = None):
        super().__init__(message)
        self.exit_code = exit_code
        self.checkpoint_epochs = checkpoint_epochs


def resume_flag(checkpoint: str | os.PathLike) -> str:
    """``--resume CKPT`` for the lines that say how to go on, as a shell reads it: the path
    quoted where it needs it (a space: ``runs/a b``)."""
    return f"--resume {shlex.quote(str(checkpoint))}"


def interrupted(sigterm: bool, then: str | None = None,
                checkpoint_epochs: int | None = None) -> Interrupted:
    """What a run stopped by SIGTERM (``sigterm``) or else by Ctrl-C reports: the
    :class:`Interrupted` that names the signal, with the shell's exit code for it (128 + its
    number), and ``then``, how to go on, after a semicolon."""
    name, number = ("SIGTERM", signal.SIGTERM) if sigterm else ("Ctrl-C (SIGINT)", signal.SIGINT)
    return Interrupted(f"stopped by {name}" + (f"; {then}" if then else ""), 128 + number,
                       checkpoint_epochs)


@contextlib.contextmanager
def stopped(then: str | Callable[[], str]):
    """A Ctrl-C or SIGTERM (:class:`Terminated`) in the block that no run, stack or sweep
    reported (each says how it goes on) as :class:`Interrupted`, saying ``then``
    (``train.py``'s :data:`~lotterynet.cli.NOT_STARTED` before the command's work,
    :data:`~lotterynet.cli.BEGUN` in it; ``approximate``'s and ``targets``' what they keep); a
    callable, asked as it stops, where the block holds both (as
    :func:`~lotterynet.sweep_jobs.stopped_sweep`'s ``then``)."""
    try:
        yield
    except (KeyboardInterrupt, Terminated) as stop:
        raise interrupted(isinstance(stop, Terminated), then() if callable(then) else then
                          ) from None


class Terminated(BaseException):
    """SIGTERM where Lightning does not handle it (data being read, the ticket or the results
    being written), raised by the run's handler (:class:`~lotterynet.process_lifetime.SigtermStop`)
    as Python raises KeyboardInterrupt for Ctrl-C: a BaseException, so that no ``except
    Exception`` on the way turns it into another error. Reported as :class:`Interrupted`."""


class WandbFailed(RuntimeError):
    """W&B failed where a run, a stack or a sweep logs to it (its own error, which was a
    traceback: its server refusing or out of reach, an upload failing, a setting it refuses
    at its start): one line naming what it failed to log, what is kept and how to go on
    (:func:`~lotterynet.loggers.reporting_wandb_failure`). Exit code 1, as before."""


#: A path that holds the wrong kind of thing: a folder where a file belongs (a damaged run or
#: sweep folder), a file where a folder does. Bad input, named by its path.
IN_THE_WAY = (IsADirectoryError, NotADirectoryError, FileExistsError)

REPORTED = (ConfigError, CheckpointError, DatasetNotFound, WriteFailed, TrainingDiverged,
            OutOfMemory, Interrupted, WandbFailed, *IN_THE_WAY)
"""The errors a command reports as one line (``prog: error: MESSAGE``), not a traceback."""

#: The command's name, and how it begins the one line it reports an error in (its parser's
#: and :func:`~lotterynet.cli.main`'s; a sweep reads it at the end of a job's log and writes
#: its failures with it).
PROG = "train.py"
ERROR = f"{PROG}: error: "


def exit_code(err: BaseException) -> int:
    """What a command that stopped on ``err`` (one of :data:`REPORTED`) exits with; a Ctrl-C
    or SIGTERM (``KeyboardInterrupt``, :class:`Terminated`) as its :class:`Interrupted`, any
    other error 1 (a traceback's)."""
    if isinstance(err, (KeyboardInterrupt, Terminated)):
        return interrupted(isinstance(err, Terminated)).exit_code
    if isinstance(err, (ConfigError, CheckpointError, DatasetNotFound, *IN_THE_WAY)):
        return 2
    return getattr(err, "exit_code", 1)


def first_line(err: BaseException) -> str:
    """The first line of ``err``'s text, or its type's name when it has none (what a one-line
    report of an error raised deep inside torch says)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def escape_line_breaks(text: str) -> str:
    """``text`` on one line: a line break inside it (from a path or value the user gave) is
    written as ``\\n`` / ``\\r``, as Python writes it in a string."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


def message(err: Exception) -> str:
    """The one line reported for ``err``: an OSError's text without its ``[Errno N]`` (a
    :class:`WriteFailed`'s with how it goes on)."""
    if isinstance(err, IN_THE_WAY):  # (a rename's error names its destination second)
        return (f"{err.filename2 or err.filename!r}: {err.strerror} (something else is where "
                f"lotterynet writes or reads: move it away)")
    if isinstance(err, WriteFailed):
        return escape_line_breaks(err.said_after(err.strerror))
    return escape_line_breaks(err.command_line if isinstance(err, DatasetNotFound) else str(err))
