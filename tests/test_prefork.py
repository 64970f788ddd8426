"""The tests' forked processes (tests/prefork.py) behave as the started ones they stand for."""

import os
import signal
import sys
import time

import pytest
import torch

import prefork
from conftest import REPO

SCRIPT = """
import os, sys
import only_here, test_prefork  # ($PYTHONPATH's folders: the test's own, and tests/)
print(os.getcwd(), os.environ.get("SEND"), sys.argv[1:], __name__, sys.path[0] == "")
print("to stderr", file=sys.stderr)
sys.exit(int(sys.argv[1]))
"""


def test_a_tests_environment_forks_and_one_read_at_import_does_not(monkeypatch):
    # (the test's own environment has PYTEST_CURRENT_TEST, which the server's had not, and
    # what Lightning sets after a run in the test's process: seed_everything's variables,
    # deterministic=True's; and what a torch.compile there sets: under torch 2.9, whose
    # import does not, every test's process after the first compile was started, not forked)
    assert os.environ.get("PYTEST_CURRENT_TEST")
    monkeypatch.setenv("PL_GLOBAL_SEED", "0")
    monkeypatch.setenv("PL_SEED_WORKERS", "0")
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "")  # (put back as it was, after the test)
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR")
    torch.compile(torch.neg, backend="eager")(torch.zeros(1))
    assert os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    assert prefork.read_at_import({**os.environ, "SEND": "SIGINT"}) == []
    assert prefork.forkable([sys.executable, "train.py"], dict(os.environ))
    assert prefork.read_at_import({**os.environ, "OMP_NUM_THREADS": "7"}) == ["OMP_NUM_THREADS"]
    with pytest.warns(UserWarning, match=r"started, not forked: .* in \['OMP_NUM_THREADS'\]"):
        started = prefork.run([sys.executable, "-c", "pass"], cwd=REPO,
                              env={**os.environ, "OMP_NUM_THREADS": "7"})
    assert started.returncode == 0
    assert not prefork.forkable([sys.executable, "-I", "-c", "pass"], dict(os.environ))


def test_a_forked_process_has_its_own_cwd_environment_arguments_output_and_exit_code(tmp_path):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "only_here.py").write_text("")
    done = prefork.run([sys.executable, "-c", SCRIPT, "3"], cwd=tmp_path,
                       env={**os.environ, "SEND": "x",
                            "PYTHONPATH": f"{tmp_path / 'lib'}:{REPO / 'tests'}"})
    assert isinstance(prefork.Popen([sys.executable, "-c", ""], cwd=tmp_path), prefork.Process)
    assert done.returncode == 3
    assert done.stdout.splitlines()[-1] == f"{tmp_path} x ['3'] __main__ True"
    assert done.stderr.splitlines()[-1] == "to stderr"


def test_a_forked_process_dies_of_a_signal_and_of_an_uncaught_ctrl_c(tmp_path):
    slept = prefork.Popen([sys.executable, "-c", "import time; time.sleep(60)"], cwd=tmp_path,
                          start_new_session=True)
    deadline = time.time() + 30
    while os.getsid(slept.pid) != slept.pid and time.time() < deadline:
        time.sleep(0.01)
    assert os.getsid(slept.pid) == slept.pid  # (its own session)
    slept.send_signal(signal.SIGTERM)
    assert slept.wait(30) == -signal.SIGTERM
    interrupted = prefork.run([sys.executable, "-c", "raise KeyboardInterrupt"], cwd=REPO)
    assert interrupted.returncode == -signal.SIGINT  # (as Python ends on one)
    assert interrupted.stderr.splitlines()[-1] == "KeyboardInterrupt"
