"""One run's options, :class:`RunConfig`: a dataclass that is at once the YAML schema, the
command line (each field carries its flag's help: :func:`option`) and the record written to
``results.json``; its fields by name (:data:`FIELDS`) and their types (:func:`field_type`); and
what a config implies about where and on what it trains: its devices (:func:`device_count`), its
training examples (:func:`training_examples`, :func:`examples_per_device`) and steps per epoch
(:func:`steps_per_epoch`)."""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, field


def option(default, help: str, **argparse_kwargs):
    """A :class:`RunConfig` field: its default, its flag's help text, and any more arguments
    of the flag's ``add_argument`` (a ``type``, a ``metavar``)."""
    return field(default=default, metadata={"help": help, **argparse_kwargs})


def devices_value(text: str) -> int | str:
    """``--devices``: a count, or what Lightning reads (``auto``, ``0,1``)."""
    return int(text) if text.strip().isdigit() else text


@dataclass
class RunConfig:
    """One run's options: each field is an option with its default and its flag's help
    (:func:`option`), the fields grouped by section (what is trained, data, optimisation,
    hardware, output)."""

    # what is trained
    arch: str = option("lenet5", "architecture (fc2, fc4, lenet5, conv2, conv4, conv6, conv8, "
                       "lenet5_dacunha (da Cunha et al.'s target LeNet5 with biases: only with "
                       "--train-weights), or timm:<model name> for any timm model converted to "
                       "subnet layers)")
    structure: str | None = option(None, "structure of the subnet layers (wide: the dense net "
                                   "widened to match --match) (default: subsetsum for the "
                                   "paper's fc2, fc4 and lenet5; dense, plain edge-popup, for "
                                   "every other --arch)")
    sparsity: float = option(0.5, "fraction of maskable weights PRUNED, in [0, 1) (0.9 keeps 10%%)")
    pairs: int = option(5, "n, the coefficient pairs per target weight of the subset-sum "
                        "structure; fixedsize's n terms of each group, dacunha's hidden units "
                        "per output, malach/orseau's default --hidden (pairs x d_in); also "
                        "sizes --structure wide", metavar="N")
    activation: str = option("relu", "activation inside the subset-sum structure")
    init: str | None = option(None, "distribution of the frozen random weights (default: the "
                              "structure's own: kaiming_normal for dense/subsetsum/fixedsize, "
                              "uniform for malach/dacunha, hyperbolic for orseau)")
    hidden: int | None = option(None, "hidden width H of the malach/orseau structures (default: "
                                "pairs x in_features / in_channels of the target layer)")
    shared: bool = option(True, "share the subset-sum first layer across outputs (the paper's "
                          "construction); --no-shared gives the literal per-weight Figure 1c")
    fan_in: str = option("hidden", "subset-sum / fixed-size: the fan-in that scales the second "
                         "layer's Kaiming init and score init: hidden = the pairs x d_in hidden "
                         "units an output sums (Kaiming's), target = the target layer's d_in "
                         "(Pensia et al.'s code: sqrt(pairs) larger weights)")
    score_init: str = option("edgepopup", "bound b of the initial scores U(+-b): edgepopup = "
                             "1/sqrt(fan-in) (the edge-popup reference), kaiming = sqrt(2/fan-in) "
                             "(Pensia et al.'s code for the subset-sum layers: sqrt(2) wider), "
                             "unit = 1 for every layer (one scale: for a global top-k ranking)")
    match: str = option("subsetsum", "for --structure wide: the structure whose maskable count the "
                        "wide net matches (built with the same --pairs/--activation)")
    subnet_convs: bool = option(False, "LeNet5: make the conv layers subnet layers too (default: "
                                "random frozen filters, as in the paper); with --train-weights: "
                                "train the convs too")
    conv_init: str | None = option(None, "LeNet5: distribution of the random frozen conv filters "
                                   "(default: --init, else kaiming_normal, the paper's; the "
                                   "authors' stored runs froze PyTorch's default, "
                                   "scaled_uniform)")
    train_weights: bool = option(False, "the trained dense baseline: the same architecture with "
                                 "ordinary trained weights (no masks)")
    model_kwargs: dict = field(default_factory=dict, metadata={"help": (
        "--arch timm:<name>: more arguments of timm.create_model, values YAML: "
        "--model-kwargs patch_size=7 (a ViT on 28x28 MNIST), --model-kwargs drop_rate=0.1 "
        "(default: none)")})
    exclude: list = field(default_factory=list, metadata={"metavar": "PATTERN", "help": (
        "--arch timm:<name>: layers the conversion leaves as timm built them, as module-name "
        "glob patterns (convert's exclude=; a pattern covers the modules inside those it "
        "names): --exclude stem.conv 'stages.*.conv1', such as the layers that a refusal "
        "names (an NFNet's ScaledStdConv2d under --structure subsetsum, which takes them "
        "only with --activation identity). They are not masked: their random weights (never "
        "pretrained) are trained as ordinary weights, with --lr and --weight-decay (default: "
        "none)")})
    # data
    dataset: str = option("mnist", "data set")
    data_dir: str | None = option(None, "folder with the data in torchvision's layout (default: "
                                  "$LOTTERYNET_DATA, else ./data; downloaded if missing and "
                                  "online)", metavar="DIR")
    download: bool = option(True, "download a missing data set (torchvision's download sets no "
                            "timeout: where a firewall drops it, it waits out the system's "
                            "connect timeouts, or for ever); --no-download refuses it at once, "
                            "naming the files")
    val_size: int = option(5000, "validation examples held out from the TRAIN set (fixed split)",
                           metavar="N")
    limit_train: int | None = option(None, "train on only N training examples: the first N of "
                                     "a fixed (seeded) shuffle of the training split, the same "
                                     "examples whatever --seed (default: all of them)",
                                     metavar="N")
    augment: str = option("none", "augmentation of the training batches, drawn anew every batch "
                          "(seeded by --seed, the epoch and the batch): none, or crop-flip = "
                          "edge-popup's CIFAR-10 one, a random crop of the image padded by 4 "
                          "black pixels and a random horizontal flip; validation and test images "
                          "are never augmented")
    # optimisation (Pensia et al., Experiment 2)
    epochs: int = option(10, "training epochs")
    stop_after: int | None = option(None, "stop after this many epochs, untested, leaving the "
                                    "checkpoint to --resume (the schedule still spans --epochs) "
                                    "(default: train all --epochs)", metavar="N")
    lr: float | None = option(None, "learning rate (default: the architecture's paper recipe: "
                              "0.1 FC nets and conv nets, 0.01 LeNet5, 0.001 lenet5_dacunha; "
                              "0.1 for timm models)")
    optimizer: str = option("sgd", "optimizer: adam is torch.optim.Adam (L2 weight decay), adamw "
                            "decouples the weight decay; Adam's betas are (momentum, 0.999)")
    momentum: float = option(0.9, "SGD momentum, Adam's beta1")
    weight_decay: float = option(5e-4, "weight decay (applies to the scores, or to the weights "
                                 "with --train-weights; frozen weights never change)")
    scheduler: str = option("cosine", "learning-rate schedule: cosine anneals it to 0 over "
                            "--epochs, stepped once per epoch")
    batch_size: int = option(64, "batch size (per device)")
    seed: int = option(0, "seed of the frozen weights, the scores and the batch order")
    # hardware
    accelerator: str = option("auto", "Lightning accelerator: auto (CUDA when present), cpu, "
                              "gpu or cuda")
    devices: int = option(1, "devices; N > 1 runs DDP (gloo on the CPU); auto, or GPU indices "
                          "such as 0,1, go to Lightning as --trainer.devices", type=devices_value)
    precision: str = option("32-true", "Lightning precision (16-mixed needs a CUDA GPU; "
                            "Lightning's 16, 32, 64 and bf16 are read as it reads them)")
    cuda_graphs: bool = option(True, "on one CUDA device without autocast, replay each training "
                               "step's forward and backward from a CUDA graph (several times "
                               "faster for small models, whose steps wait on kernel launches); "
                               "--no-cuda-graphs runs every step eagerly")
    trainer: dict = field(default_factory=dict, metadata={"help": (
        "any other pl.Trainer option, as Lightning names it: --trainer.gradient_clip_val 0.5, "
        "--trainer.accumulate_grad_batches=2, --trainer.strategy ddp, --trainer.devices auto; "
        "values are YAML; callbacks and logger as {class_path: ..., init_args: {...}} "
        "(default: none)")})
    # output
    progress_bar: bool | None = option(None, "show Lightning's progress bar (default: when the "
                                       "output is a terminal; otherwise, as with "
                                       "--no-progress-bar, one line per epoch)")
    out: str | None = option(None, "run directory (default: runs/ARCH-STRUCTURE-s<SPARSITY>-"
                             "<ACTIVATION>-e<EPOCHS>-seed<SEED>)", metavar="DIR")
    overwrite: bool = option(False, "allow writing into a run directory that already holds a run")
    resume: str | None = option(None, "continue from this checkpoint (e.g. "
                                "RUN/checkpoints/last.ckpt), with the config stored in it "
                                "(default: none, a new run)",
                                metavar="FILE.ckpt")
    wandb: bool = option(False, "log to Weights & Biases (offline when no API key is configured)")
    wandb_project: str = option("lotterynet", "W&B project")
    wandb_group: str | None = option(None, "W&B group (default: none; a sweep puts its cells in "
                                     "one group)")
    wandb_entity: str | None = option(None, "W&B entity, a user or team (default: your W&B "
                                      "default entity)")
    wandb_tags: str | None = option(None, "W&B tags, a comma list (e.g. paper,fc2) (default: "
                                    "none)")
    wandb_notes: str | None = option(None, "W&B notes: a sentence on what the run is for "
                                     "(default: none)")
    log_model: bool = option(False, "also upload the checkpoint to W&B as a model artifact (the "
                             "ticket, masks and trained tensors, is always logged with --wandb)")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


FIELDS = {f.name: f for f in dataclasses.fields(RunConfig)}


@functools.cache  # (read for every field of every sweep cell)
def field_type(f: dataclasses.Field) -> type:
    """The type of a field (``str | None`` -> ``str``)."""
    return {"str": str, "int": int, "float": float, "bool": bool, "dict": dict, "list": list}[
        str(f.type).split("|")[0].strip()]


WIDE = "wide"


def on_gpu(accelerator: str) -> bool:
    """Whether Lightning runs on CUDA GPUs with this ``--accelerator``."""
    import torch

    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and
                                              torch.cuda.is_available())


def lightning_accelerator(accelerator: str) -> str:
    """The accelerator a run's Trainer is given: ``auto`` as this project reads it
    (:func:`on_gpu`: CUDA when present, else the CPU). Lightning's own ``auto`` takes a Mac's
    MPS first, which no check here counts with, and which has no float64 for the exact
    accuracies (:class:`~lotterynet.module.ExactAccuracy`)."""
    if accelerator != "auto":
        return accelerator
    return "cuda" if on_gpu(accelerator) else "cpu"


def device_count(config: RunConfig) -> int:
    """How many devices a run trains on: ``devices``, or as many as ``--trainer.devices``
    names, as Lightning reads it: ``auto`` every GPU (one process on the CPU), ``-1`` every
    GPU, ``"0,1"`` or ``[0, 1]`` those GPUs (whether they exist the Trainer checks)."""
    import torch

    devices = config.trainer.get("devices", config.devices)
    if type(devices) is int and devices > 0:
        return devices
    if devices in ("auto", -1, "-1"):
        return torch.cuda.device_count() if on_gpu(config.accelerator) else 1
    if isinstance(devices, str):
        return max(1, len([d for d in devices.split(",") if d.strip()]))
    return max(1, len(devices)) if isinstance(devices, list | tuple) else 1


def training_examples(config: RunConfig) -> int:
    """Training examples per epoch: the split after ``val_size`` is held out and
    ``limit_train`` applied."""
    from .data import DATASETS

    examples = DATASETS.get(config.dataset).train_size - config.val_size
    return min(examples, config.limit_train or examples)


def examples_per_device(config: RunConfig) -> int:
    """Training examples each device sees per epoch (:func:`training_examples` in equal shares
    among the devices: the remainder is left out, as the sampler does, so that DDP steps stay
    in lock-step)."""
    return training_examples(config) // device_count(config)


def steps_per_epoch(config: RunConfig) -> int:
    """Training batches per epoch on each device (before the Trainer's own limits)."""
    return max(1, math.ceil(examples_per_device(config) / config.batch_size))
