"""Host time a training step spends outside the model: Lightning's loop and our module's
metrics and logging, against a bare PyTorch loop (issue 11: "if Lightning's per-step overhead
dominates, find it and remove what is ours").

A tiny model (FC2, width 4, dense edge-popup) so that the model's own work is small and the
difference between the loops is what they add per step. One training epoch of ``--steps``
batches of 64, five ways, each first run once untimed (the one-time costs: the first Trainer,
first allocations), then round robin, the order reversed every other repeat, medians of
``--repeats``:

* ``bare``: forward, cross-entropy, backward, the same optimizer, nothing else;
* ``lightning``: ``EdgePopupModule`` under a plain ``pl.Trainer`` (no checkpoint, logger or
  progress bar), as shipped: the step loss logged in the steps Lightning writes;
* ``lightning, step loss logged every step``: the same, ``self.log("train/loss")`` in every
  step, as lotterynet did before (Lightning writes it only every ``log_every_n_steps`` anyway);
* ``lightning, no metric updates``: as shipped, but torchmetrics' ``update`` of the accuracy
  and mean loss does nothing (what those updates cost a step; the metrics it logs are void);
* ``lightning, manual optimization``: as shipped, but the step calls backward and the
  optimizer itself (Lightning's manual optimization, as ``StackModule`` steps): what the
  automatic loop's closure and hooks cost. (Manual optimization would give up the Trainer's
  ``gradient_clip_val`` and ``accumulate_grad_batches``, which runs may set.)

    python benchmarks/bench_lightning_overhead.py [--device cuda] [--steps 500] [--repeats 3]
"""

from __future__ import annotations

import statistics
import time
import warnings

import flags
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

import lotterynet as ln
from lotterynet.machine import cpu_name
from lotterynet.quiet import quiet_lightning
from lotterynet.run_callbacks import EpochTimer

SPEC = {"name": "fc2", "structure": "dense", "sparsity": 0.5, "width": 4}
OPTIM = {"lr": 0.01, "epochs": 1}


class ManualStep(ln.EdgePopupModule):
    """``EdgePopupModule`` stepping its optimizer itself (Lightning's manual optimization)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.automatic_optimization = False

    def training_step(self, batch, batch_idx):
        optimizer = self.optimizers()
        self.manual_backward(self._step(batch, "train"))
        optimizer.step()
        optimizer.zero_grad()


def lightning_epoch(data, device: str, every_step: bool = False, metrics: bool = True,
                    manual: bool = False) -> float:
    module = (ManualStep if manual else ln.EdgePopupModule)(SPEC, OPTIM)
    if every_step:
        module._logs_step_loss = lambda: True
    if not metrics:
        for metric in (*module.acc.values(), *module.loss.values()):
            object.__setattr__(metric, "update", lambda *args, **kwargs: None)
    timer = EpochTimer()
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[timer], limit_val_batches=0,
                         accelerator="gpu" if device == "cuda" else "cpu", devices=1)
    with warnings.catch_warnings():  # void metrics: "compute called before update"
        warnings.filterwarnings("ignore", ".*before the ``update``.*")
        trainer.fit(module, datamodule=data)
    return timer.seconds[-1]


def bare_epoch(data, device: str) -> float:
    module = ln.EdgePopupModule(SPEC, OPTIM).to(device)
    optimizer = torch.optim.SGD(module.model.parameters(), lr=0.01, momentum=0.9,
                                weight_decay=5e-4, fused=True)
    x, y = (t.to(device) for t in data.splits["train"])
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for xb, yb in zip(x.split(64), y.split(64)):
        F.cross_entropy(module.model(xb), yb).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def step_times(data, device: str, repeats: int, steps: int) -> dict[str, float]:
    """Median ms per step of each loop: one untimed epoch of each (the warm-up), then
    ``repeats`` timed epochs of ``steps``, round robin, every other round in reverse order (so
    neither the first nor the last place is always the same loop's)."""
    runs = {"bare": lambda: bare_epoch(data, device),
            "lightning": lambda: lightning_epoch(data, device),
            "lightning, step loss logged every step":
                lambda: lightning_epoch(data, device, every_step=True),
            "lightning, no metric updates": lambda: lightning_epoch(data, device, metrics=False),
            "lightning, manual optimization": lambda: lightning_epoch(data, device, manual=True)}
    for epoch in runs.values():
        epoch()
    samples = {name: [] for name in runs}
    for i in range(repeats):
        for name in list(runs)[::1 if i % 2 == 0 else -1]:
            samples[name].append(runs[name]() / steps * 1e3)
    return {name: statistics.median(s) for name, s in samples.items()}


def tiny_data(data_dir: str, steps: int) -> ln.TensorDataModule:
    data = ln.TensorDataModule("mnist", data_dir, limit_train=64 * steps, val_size=64)
    data.setup()
    return data


def main(argv=None) -> None:
    parser = flags.parser(__file__, __doc__)
    parser.add_argument("--device", type=flags.device, default="cpu", choices=["cpu", "cuda"],
                        help="torch device (default: cpu)")
    parser.add_argument("--steps", type=flags.integer(10), default=500,
                        help="training steps of 64 MNIST examples in each timed epoch, at "
                        "least 10 (default: 500)")
    parser.add_argument("--repeats", type=flags.integer(1), default=3,
                        help="timed epochs of each loop; the median is reported (default: 3)")
    parser.add_argument("--data-dir", default="../shared/data",
                        help="folder holding MNIST/ in torchvision's layout (default: "
                        "../shared/data)")
    args = parser.parse_args(argv)
    quiet_lightning()
    with flags.reported(parser):  # missing data: one line
        data = tiny_data(args.data_dir, args.steps)
    ms = step_times(data, args.device, args.repeats, args.steps)
    device = torch.cuda.get_device_name() if args.device == "cuda" else \
        f"{cpu_name()} ({torch.get_num_threads()} threads)"
    print(f"{device}, torch {torch.__version__}, {args.steps} steps of 64, median of "
          f"{args.repeats}")
    print("| loop | ms per step | over the bare loop |")
    print("|---|---|---|")
    for name, value in ms.items():
        print(f"| {name} | {value:.3f} | {value - ms['bare']:+.3f} ms |")


if __name__ == "__main__":
    main()
