"""Every benchmark script refuses a bad flag as train.py does: exit code 2 and one line that
names the bad value, before anything is measured (no traceback, no half-run benchmark)."""

import importlib

import pytest
import torch

from conftest import REPO
from lotterynet.models import MODELS

NO_GPU = not torch.cuda.is_available()

CASES = [  # (script, argv, what the line must name)
    ("bench_compile", ["--device", "tpu"], "'tpu' is not a device; valid here: cpu"),
    ("bench_compile", ["--repeats", "-1"], "argument --repeats: -1 is not an integer >= 1"),
    ("bench_layers", ["--device", "cuda:7"], "argument --device: 'cuda:7': this machine has"),
    ("bench_layers", ["--repeats", "many"], "'many' is not an integer >= 1"),
    ("bench_member_batching", ["--threads", "2", "0"], "argument --threads: 0 is not"),
    ("bench_member_batching", ["--steps", "0"], "argument --steps: 0 is not"),
    ("bench_stack", ["--members", "0"], "argument --members: 0 is not an integer from 1 to 14"),
    ("bench_stack", ["--members", "15"], "argument --members: 15 is not"),
    ("bench_stack", ["--epochs", "0"], "argument --epochs: 0 is not"),
    ("bench_stack", ["--jobs", "-2"], "argument --jobs: -2 is not"),
    ("bench_stack", ["--arch", "lenet7"], "lenet7"),
    ("bench_stack", ["--activation", "tanh", "--data-dir", "DATA"], "tanh"),
    ("bench_stack", ["--data-dir", "EMPTY", "--limit-train", "64"], "MNIST"),
    ("bench_subsetsum", ["--instances", "-1"], "argument --instances: -1 is not"),
    ("bench_subsetsum", ["--milp-instances", "0", "--repeats", "0"], "argument --repeats: 0"),
    ("bench_subsetsum", ["--milp-instances", "-5"], "argument --milp-instances: -5 is not an "
                                                    "integer >= 0"),
    ("bench_tickets", ["--sparsity", "2"], "argument --sparsity: '2' is not a fraction pruned"),
    ("bench_tickets", ["--sparsity", "nan"], "argument --sparsity: 'nan' is not"),
    ("structures_fc2", ["--data-dir", "DATA", "--epochs", "-1"], "argument --epochs: -1"),
    ("structures_fc2", ["--data-dir", "DATA", "--budget", "500000"],
     "argument --budget: 500,000 is more than a structure keeps unpruned; valid: 1 to"),
    ("structures_fc2", ["--data-dir", "DATA", "--runs-dir", "FILE"], "--runs-dir"),
    ("structures_fc2", ["--data-dir", "EMPTY"], "mnist: no data under"),
    ("gpu_suite", ["--device", "tpu"], "argument --device: 'tpu' is not a device"),
    ("bench_lightning_overhead", ["--steps", "3"], "argument --steps: 3 is not an integer >= 10"),
    ("bench_lightning_overhead", ["--data-dir", "EMPTY"], "mnist: no data under"),
]
if NO_GPU:
    CASES += [("bench_compile", ["--device", "cuda"], "no CUDA device(s); valid here: cpu"),
              ("gpu_suite", [], "argument --device: 'cuda': this machine has no CUDA"),
              ("bench_stack", ["--device", "cuda"], "argument --device: 'cuda': this machine")]


@pytest.mark.parametrize("script, argv, named", CASES,
                         ids=[f"{s}{' '.join(a)}" for s, a, _ in CASES])
def test_bad_flag_is_one_line_exit_2(script, argv, named, capsys, monkeypatch, tmp_path,
                                     data_dir):
    (tmp_path / "FILE").write_text("a file, not a folder")
    (tmp_path / "EMPTY").mkdir()
    places = {"DATA": str(data_dir), "EMPTY": str(tmp_path / "EMPTY"),
              "FILE": str(tmp_path / "FILE")}
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    # (bench_tickets registers a model of its own: kept out of the other tests' registry)
    monkeypatch.setattr(MODELS, "_entries", dict(MODELS._entries))
    module = importlib.import_module(script)
    with pytest.raises(SystemExit) as exit_:
        module.main([places.get(a, a) for a in argv])
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"{script}.py: error: "), err
    assert named in err, err
