"""``train.py`` (or ``python -c SCRIPT``) in a process of its own, started in a fraction of a
second: forked from a server process that has imported what a run imports (torch, Lightning,
torchvision: ~6 of a short run's ~8 s on the CI machine's cores, paid once a test session
instead of once a process).

The forked process is what the tests need of one started by ``subprocess``: its own pid,
session, working directory, environment, output files and exit code (a signal's ``-N``),
signals at Python's start-up dispositions, Python's own way out (threads joined, atexit hooks,
modules cleared), and the output the imports wrote at the start of its own. What it is not: a
fresh interpreter, nor one whose command line names it (``/proc/PID/cmdline`` is the
server's). The tests of Python's start itself (the command line importing no torch, a missing
wandb, ``-I``, a child's own peak memory) start real processes; the ranks Lightning launches
and the sweep's jobs are started as ever, by them. An environment that differs from the
server's (the session's, at its start) in a variable read at import (outside
:data:`READ_AT_RUN_TIME`) gets a real process too, with a warning naming it.

``python tests/prefork.py SOCKET`` is the server: a request (a JSON line: argv, cwd, env, the
output and status files, whether a new session) is answered with the pid of the process it
forks; the process's exit status is written to its status file once it has ended.
"""

import atexit
import gc
import json
import os
import runpy
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import types
import warnings
from pathlib import Path

#: What a run imports (train.py's command line, then its run, stack or sweep).
PRELOADED = ("lotterynet.cli", "lotterynet.run", "lotterynet.stack", "lotterynet.sweep")
#: The environment variables a test may set for its process that nothing reads at import.
#: (``PL_GLOBAL_SEED``, ``PL_SEED_WORKERS``: Lightning's ``seed_everything`` in a test's own
#: process sets them; ``CUBLAS_WORKSPACE_CONFIG``: its ``Trainer(deterministic=True)``;
#: ``TORCHINDUCTOR_CACHE_DIR``: its ``torch.compile``, to torch's default, under torch 2.9 at
#: the first compile; a later torch sets it as ``torch._dynamo`` is imported, in the tests'
#: process and the server's alike.)
READ_AT_RUN_TIME = ("SEND", "IN", "LOTTERYNET_", "WANDB_", "SLURM_", "PYTHONPATH", "PYTEST_",
                    "PL_GLOBAL_SEED", "PL_SEED_WORKERS", "CUBLAS_WORKSPACE_CONFIG",
                    "TORCHINDUCTOR_CACHE_DIR", "COLUMNS", "LINES")
_ENV_AT_START = dict(os.environ)


# --- the server ----------------------------------------------------------------------------

def serve(address: str) -> None:
    """Import :data:`PRELOADED`, then fork a process for each request on the socket at
    ``address``, and write each one's exit status once it has ended."""
    for name in PRELOADED:
        __import__(name)
    gc.freeze()  # (the forked processes' collections leave the server's objects unwritten)
    sys.stdout.flush()
    sys.stderr.flush()
    said = {fd: Path(f"/proc/self/fd/{fd}").read_text() for fd in (1, 2)}  # the imports' output
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(address)
    server.listen(16)
    status_files = {}
    while True:
        if select.select([server], [], [], 0.02)[0]:
            connection, _ = server.accept()
            with connection, connection.makefile("rw") as stream:
                request = json.loads(stream.readline())
                pid = os.fork()
                if pid == 0:
                    server.close()
                    run_forked(request, said)  # (ends the process)
                status_files[pid] = request["status"]
                stream.write(f"{pid}\n")
        while status_files:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
            written = status_files.pop(pid)
            Path(written + ".tmp").write_text(str(code))
            os.replace(written + ".tmp", written)


def run_forked(request: dict, said: dict[int, str]) -> None:
    """The forked process: set up as ``subprocess`` and Python's start would have it, then
    ``argv`` run as Python runs it. Its ``sys.exit``, or an exception it raises, ends it as
    Python ends (a KeyboardInterrupt by SIGINT, after a traceback that has the server's frames
    too), having run what Python runs on its way out."""
    if request["new_session"]:
        os.setsid()
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    for fd, path in ((0, os.devnull), (1, request["stdout"]), (2, request["stderr"])):
        opened = os.open(path, os.O_RDONLY if fd == 0 else os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(opened, fd)
        os.close(opened)
    sys.stdout.write(said[1])
    sys.stderr.write(said[2])
    script = request["argv"][1] != "-c"
    sys.argv = request["argv"][1 if script else 2:]
    # Python's: the script's folder ('' for -c), then $PYTHONPATH's, then the installation's
    pythonpath = [p for p in request["env"].get("PYTHONPATH", "").split(":") if p]
    sys.path[:] = [str(Path(sys.argv[0]).resolve().parent) if script else "", *pythonpath,
                   *(p for p in sys.path[1:] if p not in pythonpath)]
    if script:
        runpy.run_path(sys.argv[0], run_name="__main__")
    else:
        sys.argv[0] = "-c"
        main = sys.modules["__main__"] = types.ModuleType("__main__")
        exec(compile(request["argv"][2], "<string>", "exec"), main.__dict__)
    sys.exit(0)


# --- the tests' side -----------------------------------------------------------------------

class Process:
    """The part of :class:`subprocess.Popen` the tests use, of a forked process."""

    def __init__(self, args: list[str], pid: int, status: Path):
        self.args, self.pid, self._status, self.returncode = args, pid, status, None

    def poll(self) -> int | None:
        if self.returncode is None and self._status.exists():
            self.returncode = int(self._status.read_text())
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(self.args, timeout)
            time.sleep(0.02)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class _Server:
    """The server process: started by :func:`start_server` or at the first request."""

    proc: subprocess.Popen | None = None
    folder: Path | None = None
    started = 0  # (processes: their status files' names)

    @classmethod
    def start(cls) -> None:
        if cls.proc is None:
            cls.folder = Path(tempfile.mkdtemp(prefix="prefork-"))
            with open(cls.folder / "out", "w") as out, open(cls.folder / "err", "w") as err:
                cls.proc = subprocess.Popen([sys.executable, __file__, str(cls.folder / "socket")],
                                            env=_ENV_AT_START, stdout=out, stderr=err)
            atexit.register(cls.stop)

    @classmethod
    def address(cls) -> str:
        cls.start()
        address = cls.folder / "socket"
        while not address.exists():
            if cls.proc.poll() is not None:
                raise RuntimeError(f"the prefork server failed: {(cls.folder / 'err').read_text()}")
            time.sleep(0.05)
        return str(address)

    @classmethod
    def status_file(cls) -> Path:
        cls.started += 1
        return cls.folder / f"status{cls.started}"

    @classmethod
    def stop(cls) -> None:
        cls.proc.kill()
        cls.proc.wait()
        shutil.rmtree(cls.folder)


def start_server() -> None:
    """Start the server, which imports in the background while the first tests run."""
    _Server.start()


def runs_python(argv: list[str]) -> bool:
    """Whether ``argv`` is this Python running a script or ``-c`` (no other option)."""
    return argv[0] == sys.executable and len(argv) > 1 and (argv[1] == "-c"
                                                            or not argv[1].startswith("-"))


def read_at_import(env: dict[str, str]) -> list[str]:
    """The variables in which ``env`` differs from the server's, outside
    :data:`READ_AT_RUN_TIME`."""
    return sorted(k for k in {*env, *_ENV_AT_START} if env.get(k) != _ENV_AT_START.get(k)
                  and not k.startswith(READ_AT_RUN_TIME))


def forkable(argv: list[str], env: dict[str, str]) -> bool:
    """Whether ``argv`` can run forked from the server: Python running a script or ``-c`` in
    an environment ``env`` whose differences from the server's are read at run time only."""
    return runs_python(argv) and not read_at_import(env)


def Popen(argv: list[str], *, cwd: Path, env: dict[str, str] | None = None,
          stdout: Path | None = None, stderr: Path | None = None,
          start_new_session: bool = False) -> Process | subprocess.Popen:
    """``argv`` (``sys.executable``, then a script or ``-c``) forked from the server where
    :func:`forkable`, otherwise started by ``subprocess`` (SIGINT at :func:`default_sigint`),
    its output into the files ``stdout`` and ``stderr`` (None: discarded); ``env`` None: this
    process's environment, as ``subprocess`` has it."""
    env = dict(os.environ) if env is None else env
    if not forkable(argv, env):
        if runs_python(argv):  # (the test's, or a variable an earlier test left set)
            warnings.warn(f"prefork: {argv[1]} started, not forked: the environment differs "
                          f"from the server's in {read_at_import(env)}", stacklevel=2)
        with open(stdout or os.devnull, "w") as out, open(stderr or os.devnull, "w") as err:
            return subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=err,
                                    preexec_fn=default_sigint, start_new_session=start_new_session)
    address = _Server.address()
    request = {"argv": [str(a) for a in argv], "cwd": str(cwd), "env": env,
               "stdout": str(stdout or os.devnull), "stderr": str(stderr or os.devnull),
               "status": str(_Server.status_file()), "new_session": start_new_session}
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.connect(address)
        with client.makefile("rw") as stream:
            stream.write(json.dumps(request) + "\n")
            stream.flush()
            pid = int(stream.readline())
    return Process(request["argv"], pid, Path(request["status"]))


def run(argv: list[str], *, cwd: Path, env: dict[str, str] | None = None,
        timeout: float | None = None) -> subprocess.CompletedProcess:
    """``subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True,
    timeout=timeout)`` by :func:`Popen`."""
    with tempfile.TemporaryDirectory(prefix="prefork-run-") as folder:
        out, err = Path(folder) / "out", Path(folder) / "err"
        proc = Popen(argv, cwd=cwd, env=env, stdout=out, stderr=err)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
        return subprocess.CompletedProcess(proc.args, proc.returncode, out.read_text(),
                                           err.read_text())


def default_sigint() -> None:
    """``preexec_fn`` of a real subprocess: SIGINT at its default action (then Python's own
    handler), as a forked one has it, also under a test run started in the background (which
    ignores SIGINT, and its children would inherit that)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


if __name__ == "__main__":
    serve(sys.argv[1])
