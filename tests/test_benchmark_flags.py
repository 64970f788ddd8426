"""Every benchmark script refuses a bad flag as train.py does: exit code 2 and one line that
names the bad value, before anything is measured (no traceback, no half-run benchmark); and
what the scripts measure is what they say they measure (peak memory, mask check, paths,
warm-up)."""

import errno
import importlib
import json
import os
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import lotterynet as ln
from conftest import REPO, parser_of, unexplained_arguments
from lotterynet.machine import cpu_name
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
    ("structures_fc2", ["--data-dir", "EMPTY", "--out", "table.md"],  # (wrote table.md.md)
     "table.md' ends in .md; give the path without a suffix"),
    ("gpu_suite", ["--device", "tpu"], "argument --device: 'tpu' is not a device"),
    ("gpu_suite", ["--device", "cpu", "--data-dir", "EMPTY"],  # (was: the full suite, on the CPU)
     "--device cpu runs the suite only scaled down: add --quick"),
    ("bench_lightning_overhead", ["--steps", "3"], "argument --steps: 3 is not an integer >= 10"),
    ("bench_lightning_overhead", ["--data-dir", "EMPTY"], "mnist: no data under"),
]
if NO_GPU:
    CASES += [("bench_compile", ["--device", "cuda"], "no CUDA device(s); valid here: cpu"),
              ("bench_stack", ["--device", "cuda"], "argument --device: 'cuda': this machine")]


@pytest.mark.parametrize("script, argv, named", CASES,
                         ids=[f"{s}{' '.join(a)}" for s, a, _ in CASES])
def test_bad_flag_is_one_line_exit_2(script, argv, named, capsys, monkeypatch, tmp_path,
                                     data_dir):
    (tmp_path / "FILE").write_text("a file, not a folder")
    (tmp_path / "EMPTY").mkdir()
    offline(monkeypatch)  # (an EMPTY case would download MNIST on a machine online, and run)
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


SCRIPTS = sorted({script for script, _, _ in CASES})


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_flag_of_a_benchmark_says_what_it_does(script, monkeypatch, capsys):
    """Their --help listed 27 flags bare, their defaults unsaid: bench_stack's --arch,
    --members and six more, bench_compile's and bench_layers' --device and --repeats, ..."""
    monkeypatch.setattr(MODELS, "_entries", dict(MODELS._entries))  # (as above)
    assert unexplained_arguments(parser_of(benchmark(script, monkeypatch).main,
                                           monkeypatch)) == []


def offline(monkeypatch) -> None:
    """torchvision's MNIST (and Fashion-MNIST) downloads fail, as on a machine offline."""
    from torchvision import datasets

    def download(self):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nno network here")

    monkeypatch.setattr(datasets.MNIST, "download", download)


def benchmark(name: str, monkeypatch):
    """The script ``benchmarks/NAME.py`` as a module (its siblings importable, as when run)."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    return importlib.import_module(name)


def test_stack_memory_child_reports_its_own_peak(monkeypatch, data_dir):
    """The child's peak, not its parent's: ``ru_maxrss`` read in the child held the parent's
    high-water mark (the parent had run every cell and the stack, so both children reported
    the parent's peak)."""
    bench_stack = benchmark("bench_stack", monkeypatch)
    torch.ones(3 * 2**28).sum()  # 3 GiB: this process's peak, far above a small run's
    args = SimpleNamespace(argv=["--arch", "fc2", "--members", "1", "--limit-train", "64",
                                 "--data-dir", str(data_dir)])
    own_peak_mib = benchmark("bench_layers", monkeypatch).peak_rss_kib() / 1024
    assert bench_stack.peak_memory_mib(args, "single") < own_peak_mib - 1024


def test_stack_prints_its_row_in_the_columns_of_the_benchmarks_table(monkeypatch):
    """BENCHMARKS.md's "Stacked sweeps" table has a "train examples" column that the printed
    row lacked, so a row pasted in put every later figure one column to the left."""
    bench_stack = benchmark("bench_stack", monkeypatch)
    header = next(line for line in (REPO / "BENCHMARKS.md").read_text().splitlines()
                  if line.startswith("| arch | structure | members | train examples |"))
    row = dict(arch="lenet5", structure="subsetsum/identity", members=14,
               train_examples=55_000, limit_train=None, held_out=5000, cells_wall_s=130.7,
               stack_wall_s=38.4, wall_speedup=3.4, cpu_speedup=3.31, cells_epoch_s=113.6,
               stack_epoch_s=36.3, epoch_speedup=3.13, single_peak_mib=1227,
               stack_peak_mib=1329, memory_ratio=1.08, device="AMD EPYC (1 threads)")
    printed = bench_stack.markdown_row(row)
    assert printed.count("|") == header.count("|")
    assert printed == ("| lenet5 | subsetsum/identity | 14 | 55,000 (full split, 5,000 held out) "
                       "| 130.7 s | 38.4 s | **3.4×** | 3.31× | 113.6 s | 36.3 s | 3.13× "
                       "| 1227 MiB | 1329 MiB (1.08×) | AMD EPYC (1 threads) |")
    row.update(train_examples=6400, limit_train=6400)
    assert "| 14 | 6,400 | 130.7 s |" in bench_stack.markdown_row(row)


def test_subsetsum_times_milp_after_a_warm_up_as_it_times_solve(monkeypatch, capsys):
    """The first timed milp paid for importing scipy (0.3 s, against 0.01 s for a warm call
    on the same instance): a one-time cost on the reference's side only, where solve is
    warmed up before it is timed."""
    bench_subsetsum = benchmark("bench_subsetsum", monkeypatch)
    milp_one, timed = bench_subsetsum.milp_one, bench_subsetsum.timed
    clock, milps = [], []

    def timed_spy(fn, *args):
        clock.append(fn)
        try:
            return timed(fn, *args)
        finally:
            clock.pop()

    def milp_spy(w, c):
        milps.append("timed" if clock else "untimed")
        return milp_one(w, c)

    monkeypatch.setattr(bench_subsetsum, "timed", timed_spy)
    monkeypatch.setattr(bench_subsetsum, "milp_one", milp_spy)
    bench_subsetsum.compare_with_milp(21, 2)
    assert milps == ["untimed", "timed", "timed"]
    assert "ours <= milp on 2/2 instances" in capsys.readouterr().out


def test_layers_names_the_cpu_it_measured_on(monkeypatch, capsys):
    """Its first line said "device: CPU": BENCHMARKS.md's rows name the processor (the other
    scripts print it), which a reader re-measuring had to look up elsewhere."""
    bench_layers = benchmark("bench_layers", monkeypatch)
    monkeypatch.setattr(bench_layers, "target_table", lambda device, repeats: None)
    bench_layers.main(["--target-only"])
    assert capsys.readouterr().out == (f"device: {cpu_name()}, torch {torch.__version__}, "
                                       f"threads {torch.get_num_threads()}\n")


def test_mask_check_accepts_any_choice_among_tied_scores(monkeypatch):
    """A full sort orders tied scores arbitrarily, ``topk_mask`` keeps the lowest indices: the
    check asked for equal masks and failed at random on ties (10M unseeded scores, seed 2)."""
    bench_layers = benchmark("bench_layers", monkeypatch)
    tied = (torch.arange(1000) % 3).float()  # k = 500 cuts through the 333 scores equal to 1
    monkeypatch.setattr(torch, "randn", lambda numel, **kwargs: tied[:numel].clone())
    bench_layers.mask_times(1000, torch.device("cpu"), repeats=1)
    k = 500
    bench_layers.check_keeps_largest(bench_layers.full_sort_mask(tied, k), tied, k)
    wrong = bench_layers.full_sort_mask(2 - tied, k)  # the smallest scores
    with pytest.raises(AssertionError, match="drops a score of 2 and keeps one of 0"):
        bench_layers.check_keeps_largest(wrong, tied, k)
    with pytest.raises(AssertionError, match="keeps 501 scores, not 500"):
        bench_layers.check_keeps_largest(bench_layers.full_sort_mask(tied, k + 1), tied, k)


def fake_train(tmp_path):
    """``subprocess.run`` of ``train.py`` as far as structures_fc2 sees it: its paths read
    against its working directory, a ``results.json`` in ``--out`` with the ``init`` flag (None
    when not given) in config and spec. It refuses (exit 1) data it cannot find and an --out
    outside ``tmp_path``."""
    def run(cmd, cwd=None, **kwargs):
        argv = cmd[2:]
        flag = {name: value for name, value in zip(argv, argv[1:]) if name.startswith("--")}
        out, data = (Path(cwd or os.getcwd()) / flag[f] for f in ("--out", "--data-dir"))
        if not (data / "MNIST").is_dir() or tmp_path.resolve() not in out.resolve().parents:
            return subprocess.CompletedProcess(cmd, 1)
        init, structure = flag.get("--init"), flag["--structure"]
        out.mkdir(parents=True)
        (out / "results.json").write_text(json.dumps({
            "config": {"sparsity": float(flag["--sparsity"]), "init": init},
            "spec": {"structure": "dense" if structure == "wide" else structure, "init": init},
            "params": {"maskable": 2, "kept": 1}, "test_acc": 0.5, "val_acc": 0.5,
            "train_seconds": 1.0}))
        return subprocess.CompletedProcess(cmd, 0)
    return run


def test_structures_fc2_paths_are_the_callers_and_inits_the_ones_used(monkeypatch, tmp_path,
                                                                         data_dir):
    """Relative paths, run from elsewhere than the repository: train.py ran in the repository
    with them while the script read the results from its own directory; an --out in a folder
    still missing was written (and crashed) after all the training; and a row whose init is
    the structure's default said ``None``."""
    structures_fc2 = benchmark("structures_fc2", monkeypatch)
    monkeypatch.setattr(structures_fc2.subprocess, "run", fake_train(tmp_path))
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    structures_fc2.main(["--data-dir", os.path.relpath(data_dir), "--runs-dir", "runs",
                         "--out", "new/folder/fc2"])
    assert (tmp_path / "here" / "runs" / "6" / "results.json").is_file()
    table = (tmp_path / "here" / "new" / "folder" / "fc2.md").read_text()
    inits = {row.split(" | ")[0][2:]: row.split(" | ")[1] for row in table.splitlines()[4:]}
    assert inits == {"dense": "kaiming_normal", "wide (h matched to subsetsum n=5)":
                     "kaiming_normal", "subsetsum relu n=5": "kaiming_normal",
                     "malach H=5·d_in, U[-1,1]": "uniform",
                     "orseau H=5·d_in, hyperbolic": "hyperbolic",
                     "subsetsum identity n=5": "kaiming_normal",
                     "fixedsize identity n=5, k=1": "kaiming_normal"}



def test_structures_fc2_keeps_its_previous_results_when_the_disk_fills(monkeypatch, tmp_path,
                                                                       data_dir, capsys):
    """Its results were written in place (Path.write_text): a disk that filled after all the
    training left half a table over the previous one, and a traceback. They are written
    atomically: one line saying so, the previous files kept, no temporary file left."""
    structures_fc2 = benchmark("structures_fc2", monkeypatch)
    monkeypatch.setattr(structures_fc2.subprocess, "run", fake_train(tmp_path))
    out = tmp_path / "results"
    out.mkdir()
    for suffix in (".json", ".md"):
        (out / f"fc2{suffix}").write_text("the previous results\n")
    write_text = Path.write_text

    def full_disk(self, text, *args, **kwargs):
        if self.parent == out:  # half of it fits
            write_text(self, text[:len(text) // 2], *args, **kwargs)
            raise OSError(errno.ENOSPC, "No space left on device")
        return write_text(self, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full_disk)
    with pytest.raises(SystemExit) as exit_:
        structures_fc2.main(["--data-dir", str(data_dir), "--runs-dir", str(tmp_path / "runs"),
                             "--out", str(out / "fc2")])
    err = capsys.readouterr().err
    assert exit_.value.code != 0 and len(err.splitlines()) == 1, err
    assert err.startswith(f"structures_fc2.py: error: disk full while writing "
                          f"{str(out / 'fc2.json')!r}"), err
    assert [(out / f"fc2{s}").read_text() for s in (".json", ".md")] == [
        "the previous results\n"] * 2
    assert sorted(p.name for p in out.iterdir()) == ["fc2.json", "fc2.md"]

def test_structures_fc2_downloads_missing_data_as_its_runs_do(monkeypatch, tmp_path, capsys):
    """Missing MNIST was refused with "..., or allow downloading", which the script has no way
    to do, while its train.py runs download what is missing: it loads the data as they do
    (datamodule.load_or_download), so offline the one line says the download failed, before
    any run, and leaves no folder behind."""
    offline(monkeypatch)
    structures_fc2 = benchmark("structures_fc2", monkeypatch)
    runs = []
    monkeypatch.setattr(structures_fc2.subprocess, "run", lambda cmd, **kwargs: runs.append(cmd))
    with pytest.raises(SystemExit) as exit_:
        structures_fc2.main(["--data-dir", str(tmp_path / "none"), "--runs-dir",
                             str(tmp_path / "runs"), "--out", str(tmp_path / "fc2")])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and runs == [] and len(err.splitlines()) == 1, err
    assert err.startswith(f"structures_fc2.py: error: mnist: no data under {tmp_path / 'none'}")
    assert err.rstrip().endswith("and the download failed (no network here)"), err
    assert not (tmp_path / "none").exists()


def test_lightning_overhead_warms_up_every_loop_and_alternates_the_order(monkeypatch):
    """The first epoch of a loop pays its one-time costs; with no warm-up they landed on the
    loop timed first, always ``bare`` (lightning 118.9 ms *under* bare at --steps 10)."""
    overhead = benchmark("bench_lightning_overhead", monkeypatch)
    calls = []

    def epoch(loop):
        calls.append(loop)
        return 1.0 if calls.count(loop) == 1 else 0.01  # seconds: 1 ms a step of 10

    monkeypatch.setattr(overhead, "bare_epoch", lambda data, device: epoch("bare"))
    monkeypatch.setattr(overhead, "lightning_epoch",
                        lambda data, device, **options: epoch(str(sorted(options.items()))))
    ms = overhead.step_times(None, "cpu", repeats=2, steps=10)
    assert ms == pytest.approx(dict.fromkeys(ms, 1.0))
    loops = len(ms)
    assert calls[2 * loops:] == calls[loops:2 * loops][::-1]


def test_lightning_overhead_logs_the_step_loss_in_every_step_only_where_it_says(monkeypatch,
                                                                               data_dir):
    """Its "step loss logged every step" loop set ``_writes_step_logs``, a name the module no
    longer reads (it asks ``_logs_step_loss``): the loop was the shipped one, which logs it in
    every 50th step (Lightning's ``log_every_n_steps``), and its row measured nothing of what
    it names."""
    overhead = benchmark("bench_lightning_overhead", monkeypatch)
    logged = []
    log_step_loss = ln.EdgePopupModule._log_step_loss

    def spy(self, loss):
        logged.append(self.global_step)
        log_step_loss(self, loss)

    monkeypatch.setattr(ln.EdgePopupModule, "_log_step_loss", spy)
    data = overhead.tiny_data(str(data_dir), steps=10)
    overhead.lightning_epoch(data, "cpu", every_step=True)
    assert logged == list(range(10))
    logged.clear()
    overhead.lightning_epoch(data, "cpu")  # as shipped: no step of 10 is a 50th
    assert logged == []
