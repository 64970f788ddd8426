"""Every bad invocation — names, numbers, hardware, combinations, config files, sweep files,
resume targets, data folders, output folders — exits with code 2 and one line that names the bad
value, before any training starts, and leaves nothing behind (the corrected re-run works)."""

import json
import math
import os
import re
import resource
import shutil
import struct
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import LARGER_THAN_MEMORY, REPO, SLURM_BATCH_JOB, TINY_BIT, terabyte_file
from lotterynet.checkpointing import atomic_torch_save, load_checkpoint
from lotterynet.cli import build_parser, main
from lotterynet.config import load_yaml, make_config
from lotterynet.config_yaml import ConfigLoader
from lotterynet.errors import ConfigError
from lotterynet.idx import read_idx

SMALL = ["--arch", "fc2", "--structure", "dense", "--limit-train", "200", "--val-size", "100",
         "--no-progress-bar"]


def write(path: Path, data) -> str:
    """``data`` into ``path``: bytes as they are, str as text, anything else as YAML."""
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return str(path)


@pytest.fixture(scope="session")
def stopped_run(tmp_path_factory, data_dir) -> Path:
    """A run of fc2 stopped after 1 of 2 epochs: RUN/checkpoints/last.ckpt."""
    out = tmp_path_factory.mktemp("stopped") / "run"
    assert main([*SMALL, "--epochs", "2", "--stop-after", "1", "--data-dir", str(data_dir),
                 "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory, data_dir) -> Path:
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main([*SMALL, "--epochs", "1", "--data-dir", str(data_dir), "--out", str(out)]) == 0
    return out


def checkpoint_variant(stopped_run: Path, tmp: Path, kind: str) -> str:
    """A broken or foreign copy of the stopped run's checkpoint, in a run folder of its own."""
    source = stopped_run / "checkpoints" / "last.ckpt"
    path = tmp / f"{kind}-run" / "checkpoints" / "last.ckpt"
    path.parent.mkdir(parents=True)
    data = source.read_bytes()
    if kind == "bitflip":  # one bit in the middle of the tensor data
        flipped = bytearray(data)
        flipped[len(data) // 2] ^= 0x40
        path.write_bytes(bytes(flipped))
    elif kind == "truncated":
        path.write_bytes(data[:len(data) // 2])
    elif kind == "foreign":  # a valid torch file, not written by lotterynet
        torch.save({"state_dict": {"w": torch.ones(2)}}, path)
    elif kind == "noconfig":
        atomic_torch_save({"state_dict": {"w": torch.ones(2)}, "epoch": 0}, path)
    elif kind == "otherarch":  # a stored config that builds another model than its tensors
        checkpoint = load_checkpoint(source)
        checkpoint["hyper_parameters"]["config"]["arch"] = "fc4"
        atomic_torch_save(checkpoint, path)
    elif kind == "text":
        path.write_text("not a checkpoint")
    else:  # re-sealed (a valid digest) around a part that resuming cannot use
        checkpoint = load_checkpoint(source)
        state, tensors = checkpoint["optimizer_states"][0]["state"], checkpoint["state_dict"]
        callbacks, config = checkpoint["callbacks"], checkpoint["hyper_parameters"]["config"]
        {"hplist": lambda: checkpoint.update(hyper_parameters=[1]),
         "weightsonly": lambda: checkpoint.pop("optimizer_states"),
         "badopt": lambda: checkpoint.update(optimizer_states=[{"x": 1}]),
         # each of these was a traceback, a silent other run, or (shortmomentum) a crash of
         # torch's fused SGD kernel, which read the buffer out of bounds
         "shortmomentum": lambda: state[1].update(momentum_buffer=torch.zeros(3)),
         "nomomentum": lambda: state[1].pop("momentum_buffer"),
         # NaN scores (or momentum) trained an epoch and wrote its history before it stopped
         # as diverged, advising a lower --lr
         "nanscores": lambda: next(v for k, v in tensors.items()
                                   if k.endswith("scores")).view(-1)[7].fill_(math.nan),
         "infmomentum": lambda: state[1]["momentum_buffer"].view(-1)[0].fill_(math.inf),
         "intscores": lambda: tensors.update({k: v.long() for k, v in tensors.items()
                                              if k.endswith("scores")}),
         "otherk": lambda: config.update(sparsity=0.7),  # the layers' k still say 0.5
         "noepoch": lambda: checkpoint.pop("epoch"),
         "tmax0": lambda: checkpoint["lr_schedulers"][0].update(T_max=0),
         "loopstext": lambda: checkpoint["loops"].update(fit_loop="x"),
         # Lightning would restore a second loader's state into the run's one, mid-run
         "loaderjunk": lambda: checkpoint["loops"]["fit_loop"]["state_dict"][
             "combined_loader"].append({"epoch": 0, "batches": 1}),
         "rngjunk": lambda: callbacks["RNGState"].update(random="x"),
         "timerjunk": lambda: callbacks["EpochTimer"].update(best_val_acc="x"),
         # the history's step-logged rows (the learning rate) are kept up to global_step
         "stepjunk": lambda: checkpoint.update(global_step=checkpoint["global_step"] + 7),
         # (torch names a global of a module it blocks otherwise: it was 'corrupt or
         # unreadable', and torch's advice that weights_only=False would 'likely succeed')
         "ossystem": lambda: checkpoint.update(extra=RunsACommand()),
         }[kind]()
        atomic_torch_save(checkpoint, path)
    return str(path)


class RunsACommand:
    """What a pickle that runs a shell command when loaded holds (``os.system``)."""

    def __reduce__(self):
        return os.system, ("true",)


def corrupt_mnist(tmp: Path, data_dir: Path) -> str:
    """A copy of MNIST whose training images file is garbled after its header."""
    root = tmp / "corrupt-data"
    shutil.copytree(data_dir / "MNIST" / "raw", root / "MNIST" / "raw",
                    ignore=shutil.ignore_patterns("*.gz"))
    images = root / "MNIST" / "raw" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:1000])
    return str(root)


def idx_bytes(array: np.ndarray, big_endian_dtype: str = "u1") -> bytes:
    """``array`` as an IDX file of uint8 (``u1``) or int32 (``i4``) entries."""
    code = {"u1": 0x08, "i4": 0x0C}[big_endian_dtype]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(f">{big_endian_dtype}").tobytes()


def wrong_mnist(tmp: Path, data_dir: Path, kind: str) -> str:
    """A copy of MNIST whose files are well-formed IDX but do not hold MNIST: a label outside
    0-9, 10 x 10 test images, one test label missing, a test split of 10 examples, or labels
    stored as int32 (the training files are links)."""
    raw, root = data_dir / "MNIST" / "raw", tmp / f"{kind}-data"
    (root / "MNIST" / "raw").mkdir(parents=True)
    for f in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        (root / "MNIST" / "raw" / f).symlink_to(raw / f)
    images, labels = (read_idx(raw / f"t10k-{k}-ubyte") for k in ("images-idx3", "labels-idx1"))
    images, labels = {"label10": (images, np.where(np.arange(len(labels)) == 7, 10, labels)),
                      "small": (images[:, :10, :10], labels),
                      "count": (images, labels[:-1]), "few": (images[:10], labels[:10]),
                      "int32": (images, labels)}[kind]
    (root / "MNIST" / "raw" / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(images))
    (root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").write_bytes(
        idx_bytes(labels, "i4" if kind == "int32" else "u1"))
    return str(root)


NO_GPU = not torch.cuda.is_available()
#: A valid path of 150 one-letter names, whose cell folder name would be 300 characters long.
LONG_PATH = "/".join(["x"] * 150)
C = "{ckpt}"  # placeholders filled in by the test: files it creates under tmp_path
# (argv, substrings the one line must contain)
CASES = [
    # names
    (["--arch", "resnet9000"], ["resnet9000", "fc2"]),
    (["--structure", "nope"], ["nope", "subsetsum"]),
    (["--structure", "wide", "--match", "nope"], ["unknown match 'nope'", "subsetsum"]),
    (["--structure", "wide", "--match", "wide"], ["unknown match 'wide'", "subsetsum"]),
    (["--init", "gaussianish"], ["gaussianish", "kaiming_normal"]),
    (["--dataset", "imagenet"], ["imagenet", "fashion-mnist"]),
    (["--augment", "mirror"], ["augmentation 'mirror'", "crop-flip, none"]),
    (["--activation", "tanh"], ["tanh", "identity"]),
    (["--optimizer", "rmsprop"], ["rmsprop", "sgd"]),
    (["--scheduler", "step"], ["step", "cosine"]),
    (["--accelerator", "tpu"], ["unknown accelerator 'tpu'; valid choices: auto, cpu, gpu, cuda"]),
    (["--precision", "8-bit"], ["8-bit", "32-true"]),
    (["--precision", "17"], ["'17'", "32-true", "Lightning's 16, 32, 64, bf16"]),
    (["--config", "{cfg_int_precision}"], ["unknown precision 17", "32-true"]),
    (["--arch", "timm:"], ["timm:", "resnet18"]),
    (["--arch", "timm:resnet18x"], ["resnet18x", "resnet18"]),
    # (fc2:x was checked as a timm model name; a bare timm failed to build, unnamed)
    (["--arch", "fc2:resnet18"], ["architecture 'fc2:resnet18'",
                                  "lenet5_dacunha", "timm:<model name>"]),
    (["--arch", "timm"], ["architecture 'timm'", "timm:<model name>"]),
    # numbers
    (["--sparsity", "1.0"], ["1.0", "[0, 1)"]),
    (["--sparsity", "-0.1"], ["-0.1", "[0, 1)"]),
    (["--sparsity", "nan"], ["nan", "sparsity"]),
    (["--lr", "nan"], ["nan", "lr", "finite"]),
    (["--lr", "inf"], ["inf", "lr", "finite"]),
    (["--lr", "0"], ["lr must be a positive finite number, got 0.0"]),
    (["--lr", "-0.1"], ["-0.1", "positive"]),
    (["--momentum", "-0.5"], ["-0.5", "[0, 1)"]),
    (["--momentum", "1.5"], ["1.5", "[0, 1)"]),
    (["--weight-decay", "-0.0001"], ["-0.0001", ">= 0"]),
    (["--weight-decay", "nan"], ["nan", "weight_decay"]),
    (["--seed", "-1"], ["-1", "[0, 2**32)"]),
    (["--seed", str(2**32)], [str(2**32), "[0, 2**32)"]),
    (["--epochs", "0"], ["epochs must be positive, got 0"]),
    (["--epochs", "1.7"], ["1.7", "int"]),
    (["--batch-size", "0"], ["batch_size must be positive, got 0"]),
    (["--pairs", "0"], ["pairs must be positive, got 0"]),
    (["--val-size", "-1"], ["-1", "val_size"]),
    (["--val-size", "60000"], ["60000", "[0, 60000)"]),
    (["--limit-train", "0"], ["limit_train must be positive, got 0"]),
    (["--stop-after", "0"], ["stop_after must be positive, got 0"]),
    (["--structure", "malach", "--hidden", "0"], ["hidden must be positive, got 0"]),
    (["--sparsity", "abc"], ["abc", "--sparsity", "not a number", "[0, 1)"]),
    (["--jobs-per-device", "two", "--sweep-sparsities", "0.5"], ["two", "int"]),
    # hardware
    (["--accelerator", "cpu", "--devices", "999"], ["999", "valid choices on the CPU: 1 to"]),
    pytest.param(["--accelerator", "gpu"], ["gpu", "no CUDA GPU", "cpu"],
                 marks=pytest.mark.skipif(not NO_GPU, reason="this machine has a GPU")),
    pytest.param(["--accelerator", "cuda", "--devices", "2"], ["cuda", "no CUDA GPU"],
                 marks=pytest.mark.skipif(not NO_GPU, reason="this machine has a GPU")),
    # combinations that would silently change meaning
    (["--train-weights", "--structure", "wide"], ["--train-weights", "wide"]),
    (["--arch", "timm:resnet18", "--structure", "wide"], ["timm:resnet18", "fc2"]),
    (["--sweep-variants", "dense", "--sweep-sparsities", "0.5", "--sweep-epochs", "1", "--arch",
      "timm:resnet10t"], ["--train-weights", "a sweep of it needs --no-baseline"]),
    # flags the run would not read (ignored unsaid): refused, the reason named
    (["--structure", "dense", "--pairs", "3"], ["--pairs 3", "--structure dense", "drop it"]),
    (["--arch", "fc2", "--structure", "dense", "--no-shared"], ["--no-shared", "dense"]),
    (["--structure", "malach", "--activation", "identity"], ["'identity'", "malach"]),
    (["--structure", "subsetsum", "--match", "dense"], ["--match 'dense'", "wide only"]),
    (["--structure", "wide", "--hidden", "10"], ["--hidden 10", "--match subsetsum"]),
    (["--structure", "wide", "--match", "malach", "--hidden", "10", "--pairs", "3"],
     ["--pairs 3", "--hidden 10", "malach", "only by default"]),
    (["--structure", "orseau", "--hidden", "10", "--pairs", "3"], ["--pairs 3", "--hidden 10"]),
    # dacunha's width is out · pairs: it claimed --hidden, refused only once its layers were built
    (["--structure", "dacunha", "--hidden", "3"], ["--hidden 3", "--structure dacunha does not "
                                                   "read it"]),
    (["--sweep-sparsities", "0.5", "--sweep-epochs", "1", "--sweep", "{sw_malach_pairs}"],
     ["sets pairs: 3", "--hidden 10", "only by default"]),
    # (its cells logged to W&B outside the sweep's group, and no summary run)
    (["--sweep", "{sw_variant_wandb}"], ["variant 'wide/wandb=True' sets wandb: True",
                                         "whole sweep's", "--wandb"]),
    # (a variant differing only in a W&B option was the same run, trained twice)
    (["--sweep", "{sw_variant_tags}", "--wandb"], ["variant 'subsetsum/wandb_tags=b' sets "
                                                  "wandb_tags: 'b'", "--wandb-tags"]),
    # (a variant given twice was told to give sparsities that differ)
    (["--sweep", "{sw_variant_twice}"], ["subsetsum/identity at sparsity 0.5 and",
                                         "are the same run; give each variant once"]),
    (["--structure", "wide", "--fan-in", "target"], ["--fan-in 'target'", "wide net is dense"]),
    # the subset-sum net's size does not depend on its activation (it trained the ReLU net)
    (["--structure", "wide", "--activation", "identity"],
     ["--activation 'identity'", "sized to --match subsetsum's maskable count"]),
    (["--structure", "wide", "--match", "fixedsize", "--no-shared"],
     ["--no-shared", "--match fixedsize's"]),
    (["--sweep-sparsities", "0.5", "--sweep-epochs", "1", "--sweep-variants", "wide,wide:identity"],
     ["variant 'wide/identity' sets activation: 'identity'", "does nothing"]),
    (["--train-weights", "--sparsity", "0.9"], ["--sparsity 0.9", "--train-weights"]),
    (["--train-weights", "--structure", "dense"], ["--structure 'dense'", "no structure"]),
    (["--train-weights", "--score-init", "kaiming"], ["--score-init 'kaiming'", "no masks"]),
    (["--arch", "fc2", "--train-weights", "--init", "uniform"], ["--init 'uniform'", "fc2"]),
    (["--train-weights", "--conv-init", "uniform", "--init", "kaiming_uniform"],
     ["--init", "--conv-init"]),
    (["--log-model"], ["--log-model", "needs --wandb"]),
    (["--wandb-tags", "a,b"], ["--wandb-tags 'a,b'", "needs --wandb"]),
    (["--sweep-variants", "subsetsum,wide", "--sweep-sparsities", "0.5", "--sweep-epochs", "1",
      "--hidden", "3"], ["--hidden 3", "any cell of this sweep"]),
    (["--resume", C, "--sparsity", "0.9"],  # (not --overwrite, which a resume refuses)
     ["--sparsity 0.9", "0.5", "may be given: --out, --resume, --stop-after"]),
    (["--resume", C, "--arch", "fc4"], ["--arch 'fc4'", "'fc2'"]),
    (["--resume", C, "--epochs", "5"], ["--epochs 5", "2"]),
    (["--resume", "{loose}"], ["loose.ckpt", "not in a run's checkpoints/ folder", "--out"]),
    (["--resume", C, "--config", "{cfg_structure}"], ["--structure 'wide'", "'dense'"]),
    # (a config file's, read before its type was checked: a TypeError traceback; True was 1)
    (["--config", "{cfg_resume_int}"], ["resume must be a string, got 3"]),
    (["--resume", C, "--config", "{cfg_stop_text}"], ["stop_after must be an integer, got 'x'"]),
    (["--resume", C, "--config", "{cfg_stop_true}"], ["stop_after must be an integer, got True"]),
    # config files
    (["--config", "/nonexistent/cfg.yaml"], ["/nonexistent/cfg.yaml", "not found"]),
    (["--config", "{cfg_invalid}"], ["cfg_invalid", "not valid YAML: line 2, column 1: "
                                                     "expected ',' or ']'"]),
    (["--config", "{cfg_sparsity}", "--train-weights"], ["1.5", "[0, 1)"]),  # (read as 0)
    (["--config", "{cfg_list}"], ["cfg_list", "mapping"]),
    (["--config", "{cfg_intkey}"], ["1", "not a string", "arch"]),
    (["--config", "{cfg_binkey}"], ["b'ab'", "not a string"]),
    (["--config", "{cfg_unknown}"], ["learning_rate", "valid keys"]),
    (["--config", "{cfg_float_epochs}"], ["1.7", "epochs", "integer"]),
    (["--config", "{cfg_maybe}"], ["maybe", "shared", "true or false"]),
    # a --config file under a sweep, named as such (the line named flags not given)
    (["--config", "{cfg_relu}", "--sweep-variants", "subsetsum:identity", "--sweep-sparsities",
      "0.5", "--sweep-epochs", "1"], ["config file", "cfg_relu': activation 'relu'",
                                      "drop it from the config file"]),
    (["--config", "{cfg_seed}", "--sweep-variants", "dense", "--sweep-sparsities", "0.5",
      "--sweep-epochs", "1"], ["config file", "cfg_seed': seed 3 is not for a sweep"]),
    # (the flag's value over the file's: named as the flag, --trainer.max_epochs, as given)
    (["--config", "{cfg_trainer_epochs}", "--trainer.max_epochs", "4", "--sweep-variants",
      "dense", "--sweep-sparsities", "0.5", "--sweep-epochs", "1"],
     ["--trainer.max_epochs 4 is not for a sweep"]),
    (["--config", "{cfg_bool_epochs}"], ["True", "epochs", "integer"]),
    (["--config", "{cfg_list_arch}"], ["['fc2']", "arch", "string"]),
    # (an empty list or false was read as an empty section)
    (["--config", "{cfg_model_empty_list}"], ["model must be a mapping", "got []"]),
    (["--config", "{cfg_trainer_false}"], ["trainer must be a mapping", "got False"]),
    (["--config", "{cfg_empty_list}"], ["cfg_empty_list", "mapping"]),
    (["--sweep", "{sw_false}"], ["sw_false", "mapping"]),
    (["--config", "{cfg_binary}"], ["cfg_binary", "cannot be read"]),
    (["--config", "{tmp}"], ["is a folder; give the file in it"]),
    # (each was 'not found': --config <(...) is a pipe; one without a writer would hang a read)
    (["--config", "/dev/null"], ["config file '/dev/null' is not a regular file (a pipe, a "
                                 "device or a socket); save the YAML in a file and give that"]),
    (["--sweep", "{fifo}"], ["sweep file", "fifo' is not a regular file"]),
    # sweep files and flags
    (["--sweep", "/nonexistent/sweep.yaml"], ["/nonexistent/sweep.yaml", "not found"]),
    (["--sweep", "{sw_unknown}"], ["sparsity", "valid keys", "sparsities"]),
    (["--sweep", "{sw_float_epochs}"], ["1.7", "epochs", "positive integers"]),
    (["--sweep", "{sw_maybe}"], ["maybe", "baseline", "true or false"]),
    (["--sweep", "{sw_text_sparsity}"], ["'abc'", "sparsities", "numbers"]),
    (["--sweep", "{sw_variants_str}"], ["'wide'", "variants", "list"]),
    (["--sweep", "{sw_empty}"], ["[]", "sparsities", "non-empty"]),
    (["--sweep", "{sw_base_list}"], ["base", "mapping"]),
    (["--sweep", "{sw_base_null}"], ["base", "mapping", "leave it out", "None"]),  # ran as {}
    (["--sweep", "{sw_base_empty_list}"], ["base", "mapping", "[]"]),
    (["--sweep", "{sw_base_unknown}"], ["sw_base_unknown", "base: unknown config key "
                                        "'learning_rate'", "valid keys"]),
    (["--sweep", "{sw_variant_unknown}"], ["sw_variant_unknown", "variants: {'lrr': 0.1, "
                                           "'structure': 'subsetsum'}: unknown config key "
                                           "'lrr'"]),
    (["--sweep", "{sw_variant_structure}"], ["sw_variant_structure", "variants: {'structure': "
                                             "'subsetsm'}: unknown structure 'subsetsm'"]),
    (["--sweep", "{sw_base_intkey}"], ["1", "not a string"]),
    (["--sweep", "{sw_sparsity_range}"], ["sw_sparsity_range", "sparsities: 1.5", "[0, 1)"]),
    (["--sweep", "{sw_negative_seed}"], ["sw_negative_seed", "seeds: -1", "[0, 2**32)"]),
    (["--sweep", "{sw_bare_variant}"], ["sw_bare_variant", "variants: {'activation': 'relu'}",
                                        "sets no structure", "subsetsum, wide"]),
    (["--sweep", "{sw_invalid}"], ["sw_invalid", "not valid YAML: line 2, column 1: expected "
                                                   "the node content"]),
    (["--sweep", "{sw_list}"], ["sw_list", "mapping"]),
    (["--sweep-sparsities", "abc"], ["abc", "--sweep-sparsities", "numbers"]),
    (["--config", "{cfg_null_epochs}"], ["epochs", "integer", "None"]),
    (["--out", ""], ["--out is empty"]),
    (["--out="], ["--out is empty"]),
    (["--trainer.max_time="], ["'max_time='", "no value", "max_time=null"]),
    (["--trainer.max_time", ""], ["'max_time='", "no value"]),
    (["--sweep-variants", "dense", "--sweep-sparsities", "0.5", "--sweep-epochs", "1", "--cell",
      ""], ["--cell is empty"]),
    (["--config", "{cfg_empty_group}"], ["wandb_group is empty"]),
    (["--arch", "lenet5_dacunha", "--structure", "wide"], ["lenet5_dacunha", "--train-weights"]),
    (["--sweep-variants", "dense", "--sweep-sparsities", "0.5", "--sweep-epochs", "1",
      "--wandb-sweep", "{a_file}"], ["a_file", "not a W&B sweep file"]),
    (["--sweep-variants", "dense", "--sweep-sparsities", "0.5", "--sweep-epochs", "1",
      "--wandb-sweep", "{tmp}/missing/w.yaml"], ["missing", "does not exist"]),
    (["--sweep-variants", "dense", "--sweep-sparsities", "0.5", "--sweep-epochs", "1",
      "--wandb-sweep", "{a_file}/w.yaml"], ["--wandb-sweep's folder", "is a file, not a folder"]),
    (["--sweep", "{sw_twice}"], ["sparsities", "0.5", "twice"]),
    (["--sweep", "{sw_null_seeds}"], ["seeds", "non-empty list", "got None"]),  # ran seed 0
    (["--sweep", "{sw_variant_sparsity}"], ["sw_variant_sparsity': variants: sparsity 0.3",
                                            "axis", "--sweep-sparsities (or the sweep file's "
                                            "sparsities)"]),
    (["--sweep", "{sw_target_only}"], ["lenet5_dacunha", "--train-weights"]),
    (["--sweep", "{sw_unbuildable}"], ["cannot build", "0.95", "at most 0.8"]),
    (["--jobs-per-device", "2"], ["--jobs-per-device", "sweep"]),
    (["--no-stack"], ["--stack", "sweep"]),
    (["--stack-file", "{st_badcells}"], ["st_badcells", "not a stack file", "cell"]),
    (["--config", "{cfg_deep}"], ["cfg_deep", "nests too deep"]),
    (["--config", "{cfg_aliases}"], ["cfg_aliases", "aliases (*name) expand it to more than "
                                                    "100,000 values"]),
    (["--sweep", "{sw_aliases}"], ["sw_aliases", "expand it to more than 100,000 values"]),
    (["--out", "{tmp}/" + "x" * 300], ["--out", "names of at most 255"]),
    (["--arch", "fc2", "--pairs", "1000000000"], ["fc2 subsetsum needs at least", "TiB of "
                                                  "memory to train", "available"]),
    (["--arch", "fc2", "--subnet-convs"], ["--subnet-convs", "fc2"]),
    (["--sweep-variants", "dense", "--sweep-sparsities", "0.5,0.5000001", "--sweep-epochs", "1"],
     ["0.5000001", "would share the folder"]),
    (["--sweep", "{sw_variant_resume}"], ["variants: resume", "not for a sweep"]),
    (["--sweep", "{sw_variant_trainer}"], ["variants: epochs 5", "axis", "epochs"]),
    (["--sweep", "{sw_variant_exclude}"], ["sets exclude: ['0'], which does nothing",
                                           "--arch lenet5 is not one"]),
    (["--config", "{cfg_exclude_text}"], ["exclude must be a list, got 'conv1.0'"]),
    (["--config", "{cfg_exclude_empty}"], ["exclude '' is not a module-name pattern"]),
    (["--sweep", "{sw_base_seed}"], ["sw_base_seed': base: seed 7", "seeds"]),
    (["--sweep-variants", "dense", "--sweep-sparsities", "0.5", "--sweep-epochs", "1",
      "--sparsity", "0.9"], ["--sparsity 0.9", "sparsities"]),
    (["--sweep-variants", "dense", "--sweep-sparsities", "0.5", "--sweep-epochs", "1",
      "--train-weights"], ["--train-weights", "baseline"]),
    (["--sweep-variants", "dense", "--sweep-sparsities", "0.5", "--sweep-epochs", "1",
      "--cell", "dense-s0.5-e1-seed0", "--wandb-sweep", "{tmp}/w.yaml"],
     ["--cell", "--wandb-sweep"]),
    # a sweep's option without the sweep: it said "the sweep needs variants", naming neither
    (["--wandb-sweep", "{tmp}/w.yaml"], ["--wandb-sweep", "give the sweep with --sweep"]),
    (["--cell", "dense-s0.5-e1-seed0"], ["--cell", "give the sweep with --sweep"]),
    (["--sweep-variants", "dense", "--sweep-sparsities", "0.5,,0.9", "--sweep-epochs", "1"],
     ["0.5,,0.9", "empty item"]),
    (["--stack-file", "{st_foreign}"], ["finished run of another config", "sparsity"]),
    (["--stack-file", "{st_dot}"], ["cell '.'", "not a folder of its own"]),
    (["--stack-file", "{st_stack_cell}"], ["other-stack", "a stack's folder"]),  # (overwrote
    (["--stack-file", "{st_file_cell}"], ["a_file", "is a file, not a folder"]),  # its checkpoint)
    (["--stack-file", "{st_nul_cell}"], ["cell", "NUL byte"]),
    (["--stack-file", "{st_extra_key}"], ["st_extra_key", "nothing else"]),
    (["--stack-file", "{st_same_cell}"], ["'c/./a' has the name of another member's cell"]),
    (["--stack-file", "{st_same_name}"], ["'q/a' has the name of another member's cell ('a')"]),
    (["--stack-file", "{st_resume}"], ["resume 'x.ckpt'", "outside its cell"]),
    (["--config", "{cfg_dupkey}"], ["cfg_dupkey", "'arch' is given twice"]),
    # (the second was read alone: the first's options dropped unsaid; LightningCLI merges them)
    (["--config", "{cfg_seed}", "--config={cfg_relu}"],
     ["--config is given twice (", "cfg_seed', then ", "cfg_relu'): one config file is read; "
      "put their options in one file, or give the second's as flags"]),
    (["--config", "{cfg_section_twice}"], ["arch is given twice", "model.arch"]),
    (["--config", "{cfg_dash_twice}"], ["batch_size is given twice"]),
    (["--limit-train", "1000000"], ["limit_train 1000000", "55,000"]),
    (["--stop-after", "50"], ["stop_after 50", "10 epochs"]),
    (["--data-dir", "{a_file}"], ["a_file", "not a folder"]),
    # (a symbolic link loop on the way: a traceback at the run's mkdir, at the data's resolve())
    (["--out", "{loop}/run"], ["--out", "loop' is a symbolic link that leads nowhere"]),
    (["--data-dir", "{loop}/data"], ["data folder", "loop/data", "symbolic link", "loop"]),
    (["--trainer.fast_dev_run", "true"], ["fast_dev_run", "debugging"]),
    (["--trainer.max_steps", "0"], ["max_steps", "-1"]),
    (["--trainer.max_epochs"], ["--trainer.max_epochs needs a value"]),
    (["--trainer.max_epochs", "--epochs", "3"], ["--trainer.max_epochs needs a value"]),
    (["--trainer.gradient_clip_val:0.5"], ["gradient_clip_val:0.5: a Trainer option is --trainer.",
                                          "write --trainer.gradient_clip_val=0.5"]),
    # (three dashes: no LightningCLI spelling; a KeyError traceback, and ---model.arch was read
    # as --arch)
    (["---trainer.x", "1"], ["unrecognized arguments: ---trainer.x 1"]),
    (["---model.arch", "fc2"], ["unrecognized arguments: ---model.arch fc2"]),
    (["--trainer.min_epochs", "50"], ["min_epochs 50", "10 epochs"]),
    (["--trainer.min_steps", "100000"], ["min_steps 100000", "8600 optimizer steps"]),
    (["--trainer.min_steps", "-5"], ["min_steps", "-5", "count >= 0"]),
    (["--trainer.num_sanity_val_steps", "-5"], ["num_sanity_val_steps", "-5", "-1 (all)"]),
    (["--trainer.limit_train_batches", "0.00001"], ["limit_train_batches 1e-05", "leaves none"]),
    (["--trainer.limit_test_batches", "0.0001"], ["limit_test_batches 0.0001", "10 test",
                                                  "leaves none"]),
    (["--trainer.limit_val_batches", "0.0001"], ["limit_val_batches 0.0001", "5 val"]),
    (["--trainer.overfit_batches", "2"], ["overfit_batches", "validation", "--limit-train"]),
    (["--trainer.limit_train_batches", ".inf"], ["limit_train_batches inf", "fraction in [0, 1]"]),
    (["--trainer.limit_val_batches", "1.5"], ["limit_val_batches 1.5", "fraction in [0, 1]"]),
    (["--wandb", "--wandb-project", "a/b"], ["--wandb-project 'a/b'", "1 to 128", "/ \\ #"]),
    (["--wandb", "--wandb-tags", "paper,,fc2"], ["--wandb-tags 'paper,,fc2'", "1 to 64", "''"]),
    (["--wandb", "--wandb-tags", "x" * 65], ["--wandb-tags", "1 to 64"]),
    # a W&B group longer than W&B takes (its server refuses it): given, or a sweep folder's name
    # (a new sweep's: with 9 characters of its path after it)
    (["--wandb", "--wandb-group", "g" * 129], ["--wandb-group", "129 characters", "at most 128"]),
    (["--sweep-variants", "dense", "--sweep-sparsities", "0.5", "--sweep-epochs", "1", "--wandb",
      "--sweep-out", "{tmp}/" + "s" * 120], ["--sweep-out", "129 characters", "at most 128"]),
    (["--sweep-variants", "dense", "--sweep-sparsities", "0.5", "--sweep-epochs", "1",
      "--sweep-out", "{tmp}/" + "s" * 120, "--wandb-sweep", "{tmp}/w.yaml"],
     ["--sweep-out", "129 characters", "at most 128"]),
    # --no-wandb beside --wandb-sweep: its agents log to W&B whatever it says
    (["--sweep-variants", "dense", "--sweep-sparsities", "0.5", "--sweep-epochs", "1",
      "--no-wandb", "--wandb-sweep", "{tmp}/w.yaml"], ["--wandb-sweep", "drop --no-wandb"]),
    (["--trainer.callbacks", "{{class_path: ModelCheckpoint, init_args: {{dirpath: x}}}}"],
     ["ModelCheckpoint", "state_key"]),  # the run's own last.ckpt would be its twin
    (["--trainer.limit_val_batches", "0", "--trainer.callbacks",
      "{{class_path: EarlyStopping, init_args: {{monitor: val/acc}}}}"],
     ["EarlyStopping", "'val/acc'", "train/acc"]),
    pytest.param(["--precision", "16-mixed"], ["16-mixed", "CUDA GPU", "bf16-mixed"],
                 marks=pytest.mark.skipif(not NO_GPU, reason="this machine has a GPU")),
    # Lightning's 16 is named as given (it was named as the 16-mixed that Lightning reads)
    pytest.param(["--precision", "16"], ["--precision 16 needs a CUDA GPU", "bf16-mixed"],
                 marks=pytest.mark.skipif(not NO_GPU, reason="this machine has a GPU")),
    (["--arch", "timm:resnet18", "--limit-train", "65", "--val-size", "100"],
     ["1 example", "batch norm", "--batch-size"]),
    (["--arch", "timm:resnet18", "--limit-train", "131", "--val-size", "100", "--devices", "2",
      "--accelerator", "cpu"], ["1 example (65 examples", "batch norm"]),  # (131 // 2 each)
    # every batch one example: its last stage's batch norm (1×1 on 28×28) raised torch's error
    (["--arch", "timm:resnet10t", "--batch-size", "1", "--limit-train", "64", "--val-size", "100"],
     ["--batch-size 1: every training batch would hold 1 example", "batch norm", "2 or more"]),
    (["--sweep", "{sw_base_resume}"], ["sw_base_resume': base: resume 'x.ckpt'",
                                       "not for a sweep"]),
    (["--sweep", "{sw_empty_variant}"], ["{}", "at least its structure"]),
    (["--sweep-variants", "subsetsum,subsetsum:relu", "--sweep-sparsities", "0.5",
      "--sweep-epochs", "1"], ["subsetsum at sparsity 0.5", "subsetsum/relu", "same run"]),
    (["--sweep-variants", "dense,dense:identity", "--sweep-sparsities", "0.5", "--sweep-epochs",
      "1"], ["variant 'dense/identity' sets activation: 'identity'", "dense does not read it"]),
    (["--sweep-variants", "subsetsum:", "--sweep-sparsities", "0.5", "--sweep-epochs", "1"],
     ["unknown activation ''", "relu, identity"]),  # (it ran with the default activation)
    (["--sweep-variants", ":identity", "--sweep-sparsities", "0.5", "--sweep-epochs", "1"],
     ["--sweep-variants: ':identity' sets no structure", "subsetsum:identity"]),
    (["--sweep", "{sw_list}", "--print-config"], ["--print-config", "sweep"]),
    (["--sweep-variants", "dense", "--sweep-sparsities", "0.5", "--sweep-epochs", "1", "--out",
      "{tmp}/o"], ["--out", "not for a sweep", "--sweep-out"]),
    (["--sweep-sparsities", "0.5", "--sweep-epochs", "1.5", "--sweep-variants", "dense"],
     ["1.5", "--sweep-epochs", "integers"]),
    (["--sweep-sparsities", "0.5", "--sweep-epochs", "1", "--sweep-variants", "nope"],
     ["--sweep-variants: 'nope': unknown structure 'nope'", "subsetsum"]),
    (["--sweep-sparsities", "0.5", "--sweep-epochs", "1", "--sweep-variants",
      "subsetsum:idnetity"], ["--sweep-variants: 'subsetsum:idnetity': unknown activation "
                              "'idnetity'", "relu, identity"]),
    (["--sweep-sparsities", "0.5", "--sweep-epochs", "1", "--sweep-variants",
      "subsetsum:identity:x"], ["--sweep-variants: 'subsetsum:identity:x' is not "
                                "structure[:activation]"]),  # (read as activation 'identity:x')
    (["--sweep-sparsities", "0.5", "--sweep-epochs", "1", "--sweep-seeds", "-1",
      "--sweep-variants", "dense"], ["-1", "seed"]),
    (["--sweep-variants", "dense"], ["sparsities", "--sweep-sparsities"]),
    (["--sweep-sparsities", "0.5", "--sweep-epochs", "1", "--sweep-variants", "dense",
      "--cell", "nope"], ["nope", "valid", "dense-s0.5-e1-seed0", "cells"]),
    (["--sweep-sparsities", "0.1,0.2,0.3,0.4", "--sweep-epochs", "1", "--sweep-variants", "dense",
      "--cell", "nope"], ["valid: dense-s0.1-e1-seed0, dense-s0.2-e1-seed0, dense-s0.3-e1-seed0, "
                          "dense-s0.4-e1-seed0, trained-e1-seed0 (5 cells"]),  # (not "…")
    (["--sweep-sparsities", "0.5", "--sweep-epochs", "1", "--sweep-variants", "dense",
      "--jobs-per-device", "0"], ["jobs-per-device", "positive"]),
    (["--sweep-sparsities", "0.5", "--sweep-epochs", "1", "--sweep-variants", "dense",
      "--sweep-out", "{a_file}"], ["a_file", "not a folder"]),
    (["--sweep-sparsities", "0.5", "--sweep-epochs", "1", "--sweep-variants", "dense",
      "--sweep-out", "{finished_dir}"], ["finished", "holds a run", "not a sweep"]),
    (["--sweep-sparsities", "0.5", "--sweep-epochs", "1", "--sweep-variants", "dense",
      "--sweep-out", "{tmp}"], ["holds files but not a sweep (no sweep.json, no cells/)",
                                "new or empty"]),
    (["--sweep-sparsities", "0.5", "--sweep-epochs", "1", "--sweep-variants", "wide",
      "--structure", "dense"], ["--structure 'dense'", "variant 'wide' sets structure"]),
    (["--sweep-sparsities", "0.5", "--sweep-epochs", "1", "--sweep-variants",
      "subsetsum:identity", "--activation", "relu", "--wandb-sweep", "{tmp}/w.yaml"],
     ["--activation 'relu'", "sets activation: 'identity'"]),
    (["--sweep-sparsities", "0.5", "--sweep-epochs", "1", "--sweep-variants", "dense",
      "--overwrite"], ["--overwrite", "not for a sweep", "--sweep-out"]),
    (["--sweep-sparsities", "0.5", "--sweep-epochs", "1", "--sweep-variants", "dense",
      "--progress-bar"], ["--progress-bar", "not for a sweep"]),
    # (a zero is a value: it was taken for an unset flag, and the grid's own used unsaid)
    (["--sweep-sparsities", "0.5", "--sweep-epochs", "1", "--sweep-variants", "dense",
      "--sweep-seeds", "1", "--seed", "0"], ["--seed 0", "not for a sweep", "axis"]),
    (["--sweep-sparsities", "0.5", "--sweep-epochs", "1", "--sweep-variants", "dense",
      "--sparsity", "0"], ["--sparsity 0", "not for a sweep", "axis"]),
    # (a path of many short names, as the variant's data_dir: '/' is '-' in the cell's name)
    (["--sweep", "{sw_long_name}", "--wandb-sweep", "{tmp}/w.yaml", "--data-dir", LONG_PATH],
     ["folder of sweep cell dense/data_dir=x/x/", "names of at most 255"]),
    (["--stack-file", "/nonexistent/stack.yaml"], ["/nonexistent/stack.yaml", "not found"]),
    (["--sweep", "{tmp}"], ["sweep file", "is a folder; give the file in it"]),
    (["--stack-file", "{st_nomembers}"], ["st_nomembers", "not a stack file", "members"]),
    (["--stack-file", "{st_badmember}"], ["nope", "lenet5"]),
    (["--stack-file", "{st_bad_epochs}"],  # (which member: the error alone did not say)
     ["st_bad_epochs", "member 1 (cell 'b'): epochs must be an integer, got 'one'"]),
    (["--stack-file", "{st_mixed}"], ["differ", "'arch'", "sparsity"]),
    (["--stack-file", "{st_valid}", "--lr", "0.1"],
     ["--stack-file", "drop", "--lr", "only --data-dir may be given"]),
    (["--stack-file", "{st_valid}", "--data-dir", "{a_file}"],  # (taken, as with --resume)
     ["--data-dir", "a_file", "is a file, not a folder"]),
    (["--stack-file", "{st_valid}", "--print-config"], ["--print-config", "st_valid"]),
    # a sweep's option beside a stack file: the stack file's line (was 'a sweep's option')
    (["--stack-file", "{st_valid}", "--cell", "c"], ["--stack-file runs the stack", "--cell"]),
    (["--arch", "fc2", "--no-baseline"], ["--no-baseline is a sweep's option"]),
    (["--sweep-variants", "dense", "--sweep-sparsities", "0.5", "--sweep-epochs", "1",
      "--jobs-per-device", "2", "--wandb-sweep", "{tmp}/w.yaml"],
     ["--jobs-per-device", "W&B agents run them"]),
    (["--sweep-variants", "fixedsize", "--sweep-sparsities", "0.99", "--sweep-epochs", "1",
      "--wandb-sweep", "{tmp}/w.yaml"], ["0.99", "keeps no weight"]),
    # Lightning's Trainer options (trainer: in a config file, --trainer.KEY VALUE)
    (["--trainer.gradient_clip_vall", "0.5"], ["gradient_clip_vall", "gradient_clip_val"]),
    (["--trainer.strategy", "bogus"], ["bogus", "ddp"]),
    (["--trainer.gradient_clip_algorithm", "bad"], ["bad", "norm"]),
    (["--trainer.accumulate_grad_batches", "0"], ["accumulate_grad_batches", "positive"]),
    (["--trainer.gradient_clip_val", "-1"], ["gradient_clip_val", "-1", ">= 0"]),
    (["--trainer.default_root_dir", "x"], ["default_root_dir", "--out"]),
    (["--trainer", "novalue"], ["novalue", "KEY=VALUE"]),
    (["--trainer.callbacks", "{{class_path: nope.Nope}}"], ["nope.Nope", "EarlyStopping"]),
    (["--trainer.callbacks", "{{class_path: pytorch_lightning.loggers.CSVLogger}}"],
     ["CSVLogger", "Callback"]),
    (["--trainer.callbacks", "{{class_path: EarlyStopping, init_args: {{monitr: x}}}}"],
     ["EarlyStopping", "monitr"]),
    (["--trainer.logger", "[1]"], ["logger", "1", "class_path"]),
    (["--trainer.callbacks", "{{class_path:EarlyStopping}}"],  # (YAML: a key, no value)
     ["callbacks entry", "'class_path:EarlyStopping' as one key: put a space after its ':'"]),
    # (each trained and tested on other settings than the run's, or crashed part way)
    (["--trainer.callbacks", "{{class_path: StochasticWeightAveraging, init_args: "
                             "{{swa_lrs: 0.01}}}}"], ["StochasticWeightAveraging", "not for a run",
                                                      "schedule"]),
    (["--trainer.callbacks", "{{class_path: BatchSizeFinder}}"], ["BatchSizeFinder",
                                                                  "--batch-size"]),
    (["--trainer.callbacks", "{{class_path: LearningRateFinder}}"], ["LearningRateFinder", "--lr"]),
    (["--trainer.callbacks", "{{class_path: ModelCheckpoint, init_args: {{save_last: true}}}}"],
     ["ModelCheckpoint", "save_last", "its own checkpoints/last.ckpt"]),
    (["--trainer.logger", "{{class_path: CSVLogger, init_args: {{name: '', version: ''}}}}"],
     ["CSVLogger", "metrics.csv over the run's own", "fresh-out"]),
    (["--wandb", "--trainer.logger", "{{class_path: WandbLogger, init_args: {{project: p}}}}"],
     ["WandbLogger beside --wandb", "twice", "--wandb-project"]),
    # (options that would change nothing)
    (["--val-size", "0", "--trainer.check_val_every_n_epoch", "2"],
     ["check_val_every_n_epoch with --val-size 0", "no validation split"]),
    (["--epochs", "2", "--trainer.check_val_every_n_epoch", "5"],
     ["check_val_every_n_epoch 5", "2 epochs", "never validate"]),
    (["--trainer.gradient_clip_algorithm", "value"], ["'value' without gradient_clip_val"]),
    (["--precision", "bf16-mixed", "--trainer.gradient_clip_val", "0.5"],
     ["gradient_clip_val 0.5", "fused SGD under mixed precision", "--optimizer adam"]),
    # (float16 rounds Adam's second moment to 0: its first step made the scores inf or NaN, and
    # the run stopped as diverged, telling to lower the lr)
    (["--precision", "16-true", "--optimizer", "adam"],
     ["--optimizer adam with --precision 16-true", "round to 0", "inf or NaN",
      "use --optimizer sgd, or --precision bf16-true, bf16-mixed or 32-true"]),
    (["--trainer.logger", "{{class_path: CSVLogger, init_args: {{save_dir: {cfg_list}/logs}}}}"],
     ["logger 'CSVLogger' save_dir", "cfg_list", "is a file, not a folder"]),
    (["--trainer.logger", "{{class_path: CSVLogger, init_args: {{save_dir: ''}}}}"],
     ["save_dir is empty", "run's folder"]),  # (Lightning: ./lightning_logs of the shell)
    (["--trainer.logger", "{{class_path: CSVLogger, init_args: {{version: [1]}}}}"],
     ["CSVLogger", "version", "an integer, or a string, or null", "[1]"]),  # (version_[1]/)
    (["--trainer.callbacks", "{{class_path: EarlyStopping, init_args: {{monitor: val/acc, "
                             "patience: 2.5}}}}"], ["EarlyStopping", "patience", "2.5"]),
    pytest.param(["--devices", "0,1"], ["--devices '0,1'", "CPU cores", "1 to", "auto"],
                 marks=pytest.mark.skipif(not NO_GPU, reason="this machine has a GPU")),
    (["--config", "{cfg_trainer_list}"], ["cfg_trainer_list", "trainer", "mapping"]),
    (["--config", "{cfg_init_args_list}"], ["init_args", "['x']", "mapping"]),
    (["--config", "{cfg_two_epochs}"], ["trainer.max_epochs 2", "epochs 3", "disagree"]),
    (["--devices", "1", "--trainer.devices", "auto"], ["--trainer.devices 'auto'",
                                                       "--devices 1", "disagree"]),
    (["--trainer.check_val_every_n_epoch", "0"], ["check_val_every_n_epoch", "positive"]),
    (["--trainer.val_check_interval", "1000", "--limit-train", "256"],
     ["val_check_interval 1000", "4 training batches"]),
    (["--trainer.val_check_interval", "0"], ["val_check_interval", "> 0"]),
    (["--trainer.max_time", "00:00:00:00"], ["max_time", "00:00:00:00", "over zero"]),
    (["--trainer.max_time", "1h"], ["max_time", "'1h'", "DD:HH:MM:SS"]),
    (["--trainer.max_time", "{{minutes: 0}}"], ["max_time", "{'minutes': 0}", "over zero"]),
    (["--trainer.barebones", "true"], ["barebones", "metrics.csv"]),
    (["--trainer.limit_test_batches", "0"], ["limit_test_batches", "test accuracy"]),
    (["--trainer.num_nodes", "2"], ["num_nodes", "one machine"]),
    # (each rank trains on limit_train // devices examples: was 0 epochs, "finished")
    (["--devices", "2", "--accelerator", "cpu", "--limit-train", "1"],
     ["limit_train 1", "2 devices no training example"]),
    (["--devices", "2", "--accelerator", "cpu", "--val-size", "59999"],
     ["val_size 59999", "2 devices no training example"]),
    (["--devices", "2", "--accelerator", "cpu", "--val-size", "1"],  # (a traceback per rank)
     ["val_size 1", "2 devices no validation example", "or 0"]),
    # (refused after the training: rank 0's results come back as a bare state dict)
    (["--trainer.strategy", "ddp_spawn", "--devices", "2", "--accelerator", "cpu"],
     ["strategy", "'ddp_spawn'", "not a spawn, fork or notebook one"]),
    (["--trainer.strategy", "ddp_notebook"], ["strategy", "'ddp_notebook'", "auto, ddp"]),
    (["--trainer.deterministic", "foo"], ["deterministic", "'warn'", "'foo'"]),
    (["--trainer.callbacks", "{{class_path: EarlyStopping, init_args: {{monitor: nope}}}}"],
     ["EarlyStopping", "'nope'", "val/acc"]),
    (["--config", "{cfg_model_unknown}"], ["learning_rate", "model", "valid keys", "sparsity"]),
    pytest.param(["--sweep", str(REPO / "configs" / "sweeps" / "pensia_fc2.yaml")],
                 ["94 hours", "215 cells", "--yes"],
                 marks=pytest.mark.skipif(not NO_GPU, reason="this machine has a GPU")),
    # resume targets
    (["--resume", "/nonexistent/last.ckpt"], ["/nonexistent/last.ckpt", "not found"]),
    (["--resume", "{run}"], ["is a folder; give its checkpoint", "resumable/checkpoints/last"]),
    (["--resume", "{run}/checkpoints"], ["is a folder; give its checkpoint",
                                         "resumable/checkpoints/last.ckpt'"]),
    (["--resume", "{tmp}"], ["is a folder; it holds no checkpoints/last.ckpt"]),
    # (it read as one without a digest; /dev/zero was read until the memory ran out, a FIFO
    # waited for a writer)
    (["--resume", "/dev/null"], ["checkpoint '/dev/null' is not a regular file (a pipe, a device "
                                 "or a socket); give the run's checkpoints/last.ckpt"]),
    (["--resume", "{ckpt_bitflip}"], ["bitflip-run", "corrupt", "digest"]),
    (["--resume", "{ckpt_truncated}"], ["truncated-run", "digest"]),
    (["--resume", "{ckpt_foreign}"], ["foreign-run", "not written by lotterynet"]),
    (["--resume", "{ticket}"], ["model.ticket' is a ticket", "not a training checkpoint",
                                "RUN/checkpoints/last.ckpt"]),
    (["--resume", "{ckpt_text}"], ["text-run", "digest"]),
    (["--resume", "{ckpt_noconfig}"], ["noconfig-run", "no run config"]),
    (["--resume", "{ckpt_otherarch}"], ["otherarch-run", "another model"]),
    (["--resume", "{done}"], ["finished", "nothing to resume"]),
    (["--resume", "{ckpt_dir_results}"], ["dir-results-run/results.json'", "Is a directory"]),
    (["--resume", "{ckpt_dir_metrics}"], ["dir-metrics-run/metrics.csv'", "Is a directory"]),
    (["--resume", "{ckpt_hplist}"], ["hplist-run", "'hyper_parameters' is not a mapping"]),
    (["--resume", "{ckpt_weightsonly}"], ["weightsonly-run", "no optimizer_states"]),
    (["--resume", "{ckpt_badopt}"], ["badopt-run", "'optimizer_states' is not a list"]),
    (["--resume", "{ckpt_shortmomentum}"], ["shortmomentum-run", "momentum_buffer (3,)",
                                            "a parameter of shape"]),
    (["--resume", "{ckpt_nomomentum}"], ["nomomentum-run", "other kinds of state"]),
    (["--resume", "{ckpt_nanscores}"], ["nanscores-run", "scores' holds NaN or infinite values",
                                        "start the run over"]),
    (["--resume", "{ckpt_infmomentum}"], ["infmomentum-run", "NaN or infinite values in a "
                                                             "parameter's momentum_buffer"]),
    (["--resume", "{ckpt_intscores}"], ["intscores-run", "scores' is torch.int64",
                                        "the model's is torch.float32"]),
    (["--resume", "{ckpt_otherk}"], ["otherk-run", "_extra_state' is [", "config gives"]),
    (["--resume", "{ckpt_noepoch}"], ["noepoch-run", "holds no epoch"]),
    (["--resume", "{ckpt_tmax0}"], ["tmax0-run", "T_max = 0", "config gives 2"]),
    (["--resume", "{ckpt_loopstext}"], ["loopstext-run", "'loops' is not a mapping"]),
    (["--resume", "{ckpt_loaderjunk}"], ["loaderjunk-run", "training loader's state",
                                         "one position (epoch, batches: counts)"]),
    (["--resume", "{ckpt_rngjunk}"], ["random-generator state", "cannot be restored"]),
    (["--resume", "{ckpt_timerjunk}"], ["epoch history", "'best_val_acc' is 'x'"]),
    (["--resume", "{ckpt_stepjunk}"], ["stepjunk-run", "global_step 11 is not its loop's (4)"]),
    (["--resume", "{ckpt_ossystem}"], ["ossystem-run", "holds Python objects that a weights-only "
                                                       "load refuses (posix.system)"]),
    (["--resume", C, "--out", "{other_run}"], ["other_run", "another run"]),
    (["--resume", C, "--out", "{finished_dir}"],  # (it said nothing was left to resume)
     ["--out", "holds a finished run", "resume into the run", "or into an empty --out"]),
    (["--arch", "fc2", "--out", "{finished_dir}"],  # (it offered a --resume, then refused)
     ["not empty (a finished run: results.json is there); pass --overwrite, or another --out"]),
    (["--fan-in", "sideways"], ["sideways", "target"]),
    (["--score-init", "wider"], ["wider", "edgepopup", "kaiming"]),
    (["--arch", "fc2", "--model-kwargs", "patch_size=7"],
     ["--model-kwargs patch_size=7", "timm.create_model", "drop it"]),
    (["--arch", "timm:vit_tiny_patch16_224"], ["16x16 patches", "--model-kwargs patch_size=7"]),
    (["--arch", "timm:vit_tiny_patch16_224", "--model-kwargs", "bogus=1"],
     ["cannot build", "bogus"]),
    (["--arch", "timm:resnet10t", "--model-kwargs", "img_size=32"],
     ["'img_size'", "set from the data set"]),
    (["--arch", "timm:resnet10t", "--model-kwargs", "checkpoint_path={a_file}"],
     ["'checkpoint_path'", "never loaded", "pretrained, checkpoint_path"]),
    (["--arch", "timm:vit_tiny_patch16_224", "--model-kwargs", "patch_size=0"],
     ["cannot build", "ZeroDivisionError"]),
    (["--arch", "timm:resnet10t", "--model-kwargs", "act_layer=nope"],
     ["cannot build", "KeyError: 'nope'"]),
    (["--arch", "timm:nf_resnet26", "--structure", "subsetsum"],  # (its scaled weight-
     ["std_eps", "and 28 other layers refused",  # standardised convolutions under ReLU)
      "train.py --arch timm:nf_resnet26 leaves them as they "
      "are (not masked, trained) with --exclude stem.conv 'stages.*.*.downsample.conv' "
      "'stages.*.*.conv1' 'stages.*.*.conv2' 'stages.*.*.conv3'"]),
    ([*TINY_BIT, "--structure", "subsetsum"],  # (layers its options refuse: it named only
     ["std_eps", "and 52 other layers refused",  # exclude=[...], convert's spelling)
      "train.py --arch timm:resnetv2_50x1_bit leaves them as they are (not masked, trained) "
      "with --exclude stem.conv 'stages.*.blocks.*.downsample.conv' 'stages.*.blocks.*.conv1' "
      "'stages.*.blocks.*.conv2' 'stages.*.blocks.*.conv3'"]),
    (["--arch", "timm:nf_resnet26", "--structure", "subsetsum", "--exclude", "stem.conv",
      "stages.*.conv1"],
     ["and 19 other layers refused", "--exclude stem.conv 'stages.*.conv1' "
      "'stages.*.*.downsample.conv' "
      "'stages.*.*.conv2' 'stages.*.*.conv3'"]),  # (the patterns given, and more)
    (["--arch", "fc2", "--exclude", "0", "2"],  # (read by the conversion of a timm model only)
     ["--exclude 0 2 does nothing", "--arch fc2 is not one", "drop it"]),
    (["--config", "{cfg_exclude_builtin}"],  # (as the flag: it was stored, doing nothing)
     ["config file", "cfg_exclude_builtin': exclude ['0'] does nothing", "--arch fc2 is not one",
      "drop it"]),
    (["--config", "{cfg_kwargs_builtin}"],
     ["config file", "cfg_kwargs_builtin': model_kwargs {'drop_rate': 0.1} does nothing",
      "timm.create_model", "--arch lenet5"]),
    (["--config", "{cfg_exclude_builtin}", "--sweep-variants", "dense", "--sweep-sparsities",
      "0.5", "--sweep-epochs", "1"], ["cfg_exclude_builtin': exclude ['0'] does nothing in any "
                                      "cell of this sweep"]),
    (["--arch", "timm:resnet10t", "--exclude", "conv1.0", "conv1.9"],
     ["cannot build", "exclude pattern 'conv1.9' names no module of the model (a typo?)"]),
    (["--arch", "timm:resnet10t", "--model-kwargs", "output_stride=3"],
     ["cannot build", "AssertionError: no message"]),
    (["--arch", "timm:resnet10t", "--model-kwargs", "drop_path_rate=1.5"],  # (training only)
     ["cannot take", "bernoulli_ expects p to be in [0, 1]"]),
    (["--arch", "timm:resnet10t", "--model-kwargs", "when=2020-01-01"],
     ["model_kwargs: argument when=datetime.date(2020, 1, 1) is of type date", "a plain value"]),
    (["--arch", "timm:resnet10t", "--model-kwargs", "drop_rate=.nan"],
     ["model_kwargs: argument drop_rate=nan is NaN or infinity", "a finite number"]),
    (["--arch", "timm:resnet10t", "--model-kwargs", "nokey"], ["'nokey'", "KEY=VALUE"]),
    (["--arch", "timm:vit_tiny_patch16_224", "--model-kwargs", "patch_size=7", "--model-kwargs",
      "class_token=false"], ["cannot build", "class token"]),  # (timm: an AssertionError)
    (["--arch", "timm:vit_tiny_patch16_224", "--model-kwargs", "patch_size=7", "--model-kwargs",
      "features_only=true"], ["gives list", "logits of shape (2, 10)", "--model-kwargs"]),
    (["--sweep-variants", "dense", "--sweep-sparsities", "0.5", "--sweep-epochs", "1",
      "--no-baseline", "--arch", "timm:vit_tiny_patch16_224", "--model-kwargs", "patch_size=7",
      "--model-kwargs", "global_pool=''"],  # refused before the sweep folder is made
     ["gives (2, 17, 10)", "logits of shape (2, 10)"]),
    (["--arch", "timm:resnet10t", "--config", "{cfg_model_kwargs}"],
     ["model_kwargs", "mapping", "[7]"]),
    (["--config", "{cfg_score_init}"], ["score_init", "'wider'", "edgepopup, kaiming, unit"]),
    (["--arch", "timm:resnet18", "--fan-in", "target"], ["timm:resnet18", "--fan-in"]),
    (["--arch", "lenet5", "--conv-init", "gaussianish"], ["gaussianish", "scaled_uniform"]),
    (["--arch", "fc2", "--conv-init", "scaled_uniform"], ["conv_init", "lenet5", "'fc2'"]),
    (["--arch", "lenet5", "--subnet-convs", "--conv-init", "uniform"],
     ["conv_init", "--subnet-convs"]),
    (["--arch", "fc2", "--no-subnet-convs"],
     ["--no-subnet-convs does nothing in this run", "--arch fc2 has none", "drop it"]),
    # data folders
    (["--data-dir", "{corrupt_data}"], ["mnist", "corrupt-data", "corrupt or unreadable"]),
    (["--sweep-variants", "dense", "--sweep-sparsities", "0.5", "--sweep-epochs", "1", "--data-dir",
      "{corrupt_data}"], ["mnist", "corrupt-data", "corrupt or unreadable"]),  # no sweep folder
    (["--data-dir", "{wrong_label10}"], ["label10-data", "labels outside 0..9"]),
    (["--data-dir", "{wrong_small}"], ["small-data", "(1, 10, 10), not (1, 28, 28)"]),
    (["--data-dir", "{wrong_count}"], ["count-data", "10,000 images but 9,999 labels"]),
    (["--data-dir", "{wrong_few}"], ["few-data", "10 test images, not 10,000"]),
    (["--data-dir", "{wrong_int32}"], ["int32-data", "corrupt or unreadable", "uint8"]),
    # output folders
    (["--out", "{a_file}"], ["a_file", "not a folder"]),
    (["--out", "{a_file}/run"], ["a_file", "not a folder"]),
    (["--out", "/sys/lotterynet-test/run"], ["/sys/lotterynet-test/run", "not writable"]),
    (["--out", "{other_run}"], ["other_run", "not empty", "--overwrite"]),
    # a value given to a flag that takes none (argparse: "unrecognized arguments: maybe")
    (["--baseline", "maybe"], ["--baseline takes no value, not 'maybe'", "--no-baseline"]),
    (["--progress-bar=yes"], ["--progress-bar takes no value, not 'yes'", "--no-progress-bar"]),
    (["--yes", "please"], ["--yes takes no value, not 'please'", "leave it out"]),
]


def fill(argv: list[str], files: dict) -> list[str]:
    return [arg.format(**files) for arg in argv]


@pytest.fixture(scope="session")
def broken_inputs(tmp_path_factory, data_dir, stopped_run) -> dict:
    """Broken checkpoints and a corrupt data folder, made once (the cases only read them)."""
    tmp = tmp_path_factory.mktemp("broken")
    kinds = ("bitflip", "truncated", "foreign", "noconfig", "otherarch", "text", "hplist",
             "weightsonly", "badopt", "shortmomentum", "nomomentum", "nanscores", "infmomentum",
             "intscores", "otherk", "ossystem",
             "noepoch", "tmax0", "loopstext", "loaderjunk", "rngjunk", "timerjunk", "stepjunk")
    return {**{f"ckpt_{k}": checkpoint_variant(stopped_run, tmp, k) for k in kinds},
            **{f"wrong_{k}": wrong_mnist(tmp, data_dir, k) for k in ("label10", "small", "count",
                                                                    "few", "int32")},
            "corrupt_data": corrupt_mnist(tmp, data_dir)}


@pytest.fixture
def files(tmp_path, broken_inputs, stopped_run, finished_run) -> dict:
    """The files the cases name, under a fresh ``tmp_path``; the checkpoint to resume is a copy
    of the stopped run, so that a refused resume can be checked to leave it unchanged."""
    run = tmp_path / "resumable"
    shutil.copytree(stopped_run, run)
    in_the_way = tmp_path / "dir-results-run"  # a folder where the run writes results.json
    shutil.copytree(stopped_run, in_the_way)
    (in_the_way / "results.json").mkdir()
    history_in_the_way = tmp_path / "dir-metrics-run"  # a folder where its history is
    shutil.copytree(stopped_run, history_in_the_way)
    (history_in_the_way / "metrics.csv").unlink()
    (history_in_the_way / "metrics.csv").mkdir()
    other = tmp_path / "other_run"
    other.mkdir()
    write(other / "metrics.csv", "step\n0\n")
    sweep = dict(variants=["dense"], sparsities=[0.5], epochs=[1])
    member = make_config({"arch": "fc2", "structure": "dense", "sparsity": 0.5}).to_dict()
    other_stack = tmp_path / "other-stack"  # another stack's folder, named as a member's cell
    other_stack.mkdir()
    write(other_stack / "stack.yaml", "members: []\n")
    finished = tmp_path / "finished-cell"  # a cell finished with the member's config at 0.5
    finished.mkdir()
    write(finished / "results.json", json.dumps({"config": member, "test_acc": 0.5}))
    configs = {
        "cfg_structure": {"structure": "wide"}, "cfg_sparsity": {"sparsity": 1.5},
        "cfg_invalid": "arch: [fc2\n", "cfg_list": ["arch", "fc2"], "cfg_intkey": {1: 2},
        "cfg_binkey": "!!binary YWI=: 1\n", "cfg_unknown": {"learning_rate": 0.1},
        "cfg_float_epochs": {"epochs": 1.7}, "cfg_maybe": "shared: maybe\n",
        "cfg_relu": {"arch": "fc2", "activation": "relu"}, "cfg_seed": {"seed": 3},
        "cfg_trainer_epochs": {"trainer": {"max_epochs": 3}},
        "cfg_bool_epochs": {"epochs": True}, "cfg_list_arch": {"arch": ["fc2"]},
        "cfg_binary": b"\xff\xfe\x00\x81binary", "cfg_trainer_list": {"trainer": [1]},
        "cfg_model_empty_list": {"arch": "fc2", "model": []},
        "cfg_trainer_false": {"trainer": False}, "cfg_empty_list": "[]\n", "sw_false": "false\n",
        "cfg_model_unknown": {"model": {"learning_rate": 0.1}},
        "cfg_score_init": {"model": {"score_init": "wider"}},
        "cfg_model_kwargs": {"model": {"model_kwargs": [7]}},
        "sw_unknown": {**sweep, "sparsity": [0.5]}, "sw_float_epochs": {**sweep, "epochs": [1.7]},
        "sw_maybe": {**sweep, "baseline": "maybe"},
        "sw_text_sparsity": {**sweep, "sparsities": ["abc"]},
        "sw_variants_str": {**sweep, "variants": "wide"}, "sw_empty": {**sweep, "sparsities": []},
        "sw_base_list": {**sweep, "base": [1]},
        "sw_malach_pairs": {**sweep, "variants": [{"structure": "malach", "hidden": 10,
                                                   "pairs": 3}]},
        "sw_variant_wandb": {**sweep, "variants": ["subsetsum", {"structure": "wide",
                                                               "wandb": True}]},
        "sw_variant_tags": {**sweep, "variants": ["subsetsum", {"structure": "subsetsum",
                                                               "wandb_tags": "b"}]},
        "sw_variant_twice": {**sweep, "variants": ["subsetsum:identity", {
            "structure": "subsetsum", "activation": "identity"}]},
        "sw_base_null": {**sweep, "base": None}, "sw_base_empty_list": {**sweep, "base": []},
        "sw_base_unknown": {**sweep, "base": {"learning_rate": 0.1}},
        "sw_variant_unknown": {**sweep, "variants": [{"structure": "subsetsum", "lrr": 0.1}]},
        "sw_variant_structure": {**sweep, "variants": [{"structure": "subsetsm"}]},
        "sw_base_intkey": {**sweep, "base": {1: 2}},
        "sw_sparsity_range": {**sweep, "sparsities": [1.5]}, "sw_invalid": "variants: [\n",
        "sw_negative_seed": {**sweep, "seeds": [-1]},
        "sw_bare_variant": {**sweep, "variants": ["wide", {"activation": "relu"}]},
        "sw_list": ["variants"], "cfg_null_epochs": {"epochs": None},
        "cfg_empty_group": {"wandb_group": ""},
        "sw_twice": {**sweep, "sparsities": [0.5, 0.5]},
        "sw_null_seeds": {**sweep, "seeds": None},
        "sw_empty_variant": {**sweep, "variants": ["wide", {}]},
        "sw_base_resume": {**sweep, "base": {"resume": "x.ckpt"}},
        "cfg_init_args_list": {"trainer": {"callbacks": [{"class_path": "EarlyStopping",
                                                           "init_args": ["x"]}]}},
        "cfg_two_epochs": {"trainer": {"max_epochs": 2}, "epochs": 3},
        "cfg_deep": "a: " + "[" * 3000 + "]" * 3000 + "\n",
        "cfg_aliases": "model_kwargs:\n" + alias_bomb("  "),
        "sw_aliases": "variants: [dense]\nsparsities: [0.5]\nepochs: [1]\nbase:\n"
                      "  model_kwargs:\n" + alias_bomb("    "),
        "sw_variant_sparsity": {**sweep, "variants": [{"structure": "dense", "sparsity": 0.3}]},
        "sw_target_only": {**sweep, "variants": ["wide"], "base": {"arch": "lenet5_dacunha"}},
        "sw_unbuildable": {**sweep, "variants": ["fixedsize"], "sparsities": [0.5, 0.95],
                           "base": {"arch": "fc2"}},
        "st_badcells": {"members": [member, {**member, "sparsity": 0.9}], "cells": [1, 2]},
        "sw_variant_resume": {**sweep, "variants": [{"structure": "dense", "resume": "x.ckpt"}]},
        "sw_long_name": {**sweep, "variants": [{"structure": "dense", "data_dir": LONG_PATH}]},
        "sw_variant_exclude": {**sweep, "variants": [{"structure": "dense", "exclude": ["0"]}]},
        "cfg_exclude_text": {"arch": "timm:resnet10t", "model": {"exclude": "conv1.0"}},
        "cfg_exclude_empty": {"arch": "timm:resnet10t", "exclude": ["conv1.0", ""]},
        "cfg_exclude_builtin": {"model": {"arch": "fc2", "exclude": ["0"]}},
        "cfg_kwargs_builtin": {"model_kwargs": {"drop_rate": 0.1}},
        "sw_variant_trainer": {**sweep, "variants": [{"structure": "dense",
                                                      "trainer": {"max_epochs": 5}}]},
        "sw_base_seed": {**sweep, "base": {"model": {"seed": 7}}},
        "st_foreign": {"members": [{**member, "sparsity": 0.9}], "cells": [str(finished)]},
        "st_dot": {"members": [member], "cells": ["."]},
        "st_resume": {"members": [{**member, "resume": "x.ckpt"}], "cells": [str(tmp_path / "c")]},
        "cfg_resume_int": {"resume": 3}, "cfg_stop_text": {"stop_after": "x"},
        "cfg_stop_true": {"stop_after": True},
        "cfg_dupkey": "arch: fc2\narch: fc4\n", "cfg_int_precision": {"precision": 17},
        "cfg_section_twice": {"arch": "fc2", "model": {"arch": "fc4"}},
        "cfg_dash_twice": {"batch-size": 32, "batch_size": 64},
        "st_nomembers": {"cells": ["a"]},
        "st_badmember": {"members": [{"arch": "nope"}], "cells": ["a"]},
        "st_bad_epochs": {"members": [member, {**member, "epochs": "one"}], "cells": ["a", "b"]},
        "st_mixed": {"members": [member, {**member, "arch": "lenet5"}], "cells": ["a", "b"]},
        "st_valid": {"members": [member], "cells": [str(tmp_path / "cell")]},
        "st_stack_cell": {"members": [member], "cells": [str(other_stack)]},
        "st_file_cell": {"members": [member], "cells": [str(tmp_path / "a_file")]},
        "st_nul_cell": {"members": [member], "cells": [str(tmp_path / "a\x00b")]},
        "st_extra_key": {"members": [member], "cells": [str(tmp_path / "cell")], "junk": [1]},
        "st_same_cell": {"members": [member, {**member, "sparsity": 0.9}],
                         "cells": ["c/a", "c/./a"]},
        "st_same_name": {"members": [member, {**member, "sparsity": 0.9}],
                         "cells": ["p/a", "q/a"]},
    }
    names = {name: write(tmp_path / name, data) for name, data in configs.items()}
    (tmp_path / "loop").symlink_to("loop")
    os.mkfifo(tmp_path / "fifo")  # (no writer: opened for reading, it waits for one)
    loose = tmp_path / "loose" / "loose.ckpt"  # a checkpoint copied out of its run
    loose.parent.mkdir()
    shutil.copy(run / "checkpoints" / "last.ckpt", loose)
    return {**names, **broken_inputs, "ckpt": str(run / "checkpoints" / "last.ckpt"),
            "ckpt_dir_results": str(in_the_way / "checkpoints" / "last.ckpt"),
            "ckpt_dir_metrics": str(history_in_the_way / "checkpoints" / "last.ckpt"),
            "run": str(run), "loose": str(loose),
            "tmp": str(tmp_path), "done": str(finished_run / "checkpoints" / "last.ckpt"),
            "ticket": str(finished_run / "model.ticket"),
            "finished_dir": str(finished_run), "other_run": str(other),
            "loop": str(tmp_path / "loop"), "fifo": str(tmp_path / "fifo"),
            "a_file": write(tmp_path / "a_file", "x")}


def alias_bomb(indent: str) -> str:
    """YAML mapping lines, ten levels of ten aliases each: 10^10 values in 0.3 KB (a config
    holding them hung, filling the memory)."""
    return "".join(f"{indent}x{i}: &x{i} [{', '.join([f'*x{i - 1}' if i else '1'] * 10)}]\n"
                   for i in range(10))


def snapshot(*folders: Path) -> dict:
    return {p: p.read_bytes() if p.is_file() else None
            for folder in folders for p in sorted(folder.rglob("*"))}


def test_at_least_60_cases_in_every_family():
    assert len(CASES) >= 60


@pytest.mark.parametrize("argv, named", CASES)
def test_bad_input_exits_2_with_one_line_and_leaves_nothing(argv, named, files, tmp_path,
                                                            finished_run, data_dir, capsys):
    out = tmp_path / "fresh-out"
    args = fill(argv, files)
    extra = [] if "--out" in args or "--resume" in args else ["--out", str(out)]
    if any(a.startswith("--sweep") for a in args):  # a sweep takes no --out
        extra = [] if "--sweep-out" in args else ["--sweep-out", str(out)]
    before = snapshot(tmp_path, finished_run)
    started = time.perf_counter()
    code = main([*args, *extra, "--data-dir", str(data_dir)]
                if "--data-dir" not in args else [*args, *extra])
    printed, err = capsys.readouterr()
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert printed == ""  # refused before its first line (a sweep's CPU estimate, a run's
    # parameter counts: a resume whose epoch history was junk printed them, then refused)
    assert all(n in lines[0] for n in named), lines[0]
    assert snapshot(tmp_path, finished_run) == before  # nothing written, nothing changed
    assert not out.exists()
    assert time.perf_counter() - started < 30  # refused before any training


def read_only(monkeypatch, folder: Path) -> None:
    """``folder`` refuses new entries as the system does after ``chmod a-w`` (the probe of a
    folder one may write in, a temporary folder made there, fails; root passes chmod)."""
    import tempfile

    mkdtemp = tempfile.mkdtemp

    def probe(*args, dir=None, **kwargs):
        if Path(dir) == folder:
            raise PermissionError(13, "Permission denied")
        return mkdtemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkdtemp", probe)


def test_a_resume_whose_run_folder_is_read_only_names_the_resume_not_out(
        stopped_run, tmp_path, monkeypatch, capsys):
    """``--resume RUN/checkpoints/last.ckpt`` of a run made read-only said "--out 'RUN' is not
    writable (...); choose another folder", naming a flag not given: it names the resume's
    run folder and the way on, an empty --out."""
    run = tmp_path / "run"
    shutil.copytree(stopped_run, run)
    read_only(monkeypatch, run)
    checkpoint = str(run / "checkpoints" / "last.ckpt")
    assert main(["--resume", checkpoint]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"train.py: error: --resume {checkpoint!r}: its run folder {str(run)!r} is not writable "
        f"(Permission denied in {str(run)!r}); resume into an empty --out"]


@pytest.mark.parametrize("resume", [True, False])
def test_a_run_whose_checkpoints_folder_is_read_only_is_refused_before_it_trains(
        stopped_run, tmp_path, monkeypatch, capsys, resume):
    """A run folder whose ``checkpoints/`` was made read-only (the folder itself writable) was
    refused only at its first checkpoint, an epoch trained for nothing: it is refused up
    front, naming that folder (a resume of the run, a new run there with --overwrite)."""
    run = tmp_path / "run"
    shutil.copytree(stopped_run, run)
    checkpoints = run / "checkpoints"
    read_only(monkeypatch, checkpoints)
    checkpoint = str(checkpoints / "last.ckpt")
    argv = ["--resume", checkpoint] if resume else [
        *SMALL, "--epochs", "1", "--overwrite", "--out", str(run)]
    flag, instead = ((f"--resume {checkpoint!r}", "resume into an empty --out") if resume
                     else ("--out", "choose another folder"))
    assert main(argv) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"train.py: error: {flag}: its checkpoints folder {str(checkpoints)!r} is not writable "
        f"(Permission denied in {str(checkpoints)!r}); {instead}"]


def test_a_data_folder_from_the_environment_that_is_a_file_is_named(tmp_path, monkeypatch,
                                                                    capsys):
    """``$LOTTERYNET_DATA`` naming a file is refused as ``--data-dir`` is (it read as corrupt
    data)."""
    (tmp_path / "a_file").write_text("x")
    monkeypatch.setenv("LOTTERYNET_DATA", str(tmp_path / "a_file"))
    assert main([*SMALL, "--epochs", "1", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"$LOTTERYNET_DATA '{tmp_path / 'a_file'}' is a file, not a folder")
    assert "\n" not in err and not (tmp_path / "run").exists()


def test_a_resume_whose_stored_data_folder_is_not_here_names_it_and_data_dir(
        tmp_path, stopped_run, data_dir, monkeypatch, capsys):
    """A checkpoint from elsewhere names a data folder not here: its resume is refused in one
    line naming the folder, that the checkpoint stored it, and --data-dir (it said "no data
    under" it and to point $LOTTERYNET_DATA there, though that was set: a stored folder comes
    first)."""
    loaded = load_checkpoint(stopped_run / "checkpoints" / "last.ckpt")
    loaded["hyper_parameters"]["config"]["data_dir"] = str(tmp_path / "gone")
    shutil.copytree(stopped_run, tmp_path / "run")
    checkpoint = tmp_path / "run" / "checkpoints" / "last.ckpt"
    atomic_torch_save(loaded, checkpoint)
    monkeypatch.setenv("LOTTERYNET_DATA", str(data_dir))
    assert main(["--resume", str(checkpoint)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"train.py: error: --resume: the data folder '{tmp_path / 'gone'}' stored in checkpoint "
        f"'{checkpoint}' is not a folder here; give --data-dir with the folder that holds the "
        f"data here (a stored folder comes before $LOTTERYNET_DATA)"]
    assert not (tmp_path / "gone").exists()


def test_paths_starting_with_a_tilde_are_refused_naming_what_they_would_mean(tmp_path,
                                                                           monkeypatch, capsys):
    """A path that starts with ``~``, which no shell expanded (quoted, in a file, in
    ``$LOTTERYNET_DATA``), is refused naming the home folder's path and the one of the name
    here: ``--out '~/x'`` was the run's folder ``./~/x`` and Lightning's ``$HOME/x``, which
    got the history, then a traceback (FileNotFoundError: '~/x/metrics.csv'); a data folder
    was read as ``./~/data``."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    said = ("starts with '~', which only a shell expands (unquoted); give "
            f"'{tmp_path}/home/x' (in the home folder), or '{tmp_path}/~/x' (the name '~' here)")
    for flag, path in (("--out", "~/x"), ("--out", "./~/x"), ("--sweep-out", "~/x"),
                       ("--resume", "~/x")):
        sweep = ["--sweep-variants", "dense", "--sweep-sparsities", "0.5", "--sweep-epochs",
                 "1"] if flag == "--sweep-out" else SMALL
        assert main([*sweep, flag, path]) == 2
        assert capsys.readouterr().err == f"train.py: error: {flag} {path!r} {said}\n"
    assert main(["--resume", "~nobody-here/x"]) == 2  # (no such user: no home to name)
    assert capsys.readouterr().err.endswith(f"(unquoted); give '{tmp_path}/~nobody-here/x' "
                                            f"(the name '~nobody-here' here)\n")
    sweep = write(tmp_path / "s.yaml", {"variants": [{"structure": "dense", "data_dir": "~/d"}],
                                        "sparsities": [0.5], "epochs": [1]})
    assert main(["--sweep", sweep, "--sweep-out", str(tmp_path / "sweep")]) == 2
    assert capsys.readouterr().err == (
        f"train.py: error: sweep file '{sweep}': variants: {{'data_dir': '~/d', 'structure': "
        f"'dense'}}: data_dir '~/d' starts with '~', which only a shell expands (unquoted); give "
        f"'{tmp_path}/home/d' (in the home folder), or '{tmp_path}/~/d' (the name '~' here)\n")
    monkeypatch.setenv("LOTTERYNET_DATA", "~/data")
    assert main([*SMALL, "--epochs", "1", "--out", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err == (
        f"train.py: error: $LOTTERYNET_DATA '~/data' starts with '~', which only a shell "
        f"expands (unquoted); give '{tmp_path}/home/data' (in the home folder), or "
        f"'{tmp_path}/~/data' (the name '~' here)\n")
    assert sorted(tmp_path.iterdir()) == [Path(sweep)]


@pytest.mark.parametrize("value", ["abc", "1,", "1.5", "-1", "0,1"])
def test_devices_neither_a_count_nor_auto_are_named_with_the_valid_choices(value, tmp_path,
                                                                           capsys):
    """``--devices`` that is not a count nor ``auto`` (nor, on GPUs, GPU indices) was refused
    by Lightning once the Trainer was built, naming no flag nor the valid forms: "trainer
    options {'devices': 'abc'} refused by Lightning: `devices` selected with `CPUAccelerator`
    should be an int > 0"."""
    assert main(["--devices", value, "--accelerator", "cpu", "--out", str(tmp_path / "r")]) == 2
    assert re.match(rf"^train\.py: error: --devices {re.escape(repr(value))} is not a count of "
                    rf"CPU cores nor auto; valid choices on the CPU: 1 to {os.cpu_count()}, or "
                    rf"auto\n$", capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("given, named", [
    (["--devices", "0"], "--devices 0 is not a count of CPU cores nor auto"),
    (["--trainer.devices", "-2"], "--trainer.devices -2 is not a count of CPU cores nor auto"),
    (["--trainer.devices", "abc"], "--trainer.devices 'abc' is not a count of CPU cores nor auto"),
    (["--config", "{file}"], "config file '{file}': devices 0 is not a count of CPU cores nor "
                             "auto"),
    # (a file's trainer: {devices: abc} was named --devices 'abc', a flag not given)
    (["--config", "{trainer_file}"], "config file '{trainer_file}': devices 'abc' is not a count "
                                     "of CPU cores nor auto"),
    # (it was refused by the examples it left some of the 99 devices, the 2 cores unsaid)
    (["--devices", "{many}", "--limit-train", "64"], "--devices {many}: this machine has {cores} "
                                                     "CPU cores")])
def test_a_device_count_this_machine_cannot_run_is_named_with_the_valid_choices(given, named,
                                                                               tmp_path, capsys):
    """``--devices 0`` was refused as "devices must be positive, got 0": a config key, and no
    word of what is valid (``auto``, and no more than the machine has)."""
    file = write(tmp_path / "c.yaml", {"devices": 0})
    trainer_file = write(tmp_path / "t.yaml", {"trainer": {"devices": "abc"}})
    cores = os.cpu_count()
    fill = {"file": file, "trainer_file": trainer_file, "many": cores + 1, "cores": cores}
    argv = [arg.format(**fill) for arg in given]
    assert main([*argv, "--accelerator", "cpu", "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err == (f"train.py: error: {named.format(**fill)}; valid choices "
                                       f"on the CPU: 1 to {cores}, or auto\n")
    assert sorted(tmp_path.iterdir()) == sorted([Path(file), Path(trainer_file)])


@pytest.mark.skipif(not NO_GPU, reason="this machine has a GPU")
@pytest.mark.parametrize("given, named", [
    (["--trainer.precision", "16-mixed"], "--trainer.precision 16-mixed"),
    (["--trainer.precision=16"], "--trainer.precision 16"),
    (["--precision", "16"], "--precision 16"),
    (["--config", "{file}"], "config file '{file}': precision 16-mixed")])
def test_a_precision_the_cpu_cannot_run_is_named_as_the_command_gave_it(given, named, tmp_path,
                                                                        capsys):
    """``--trainer.precision 16-mixed`` (or a config file's ``trainer: {precision: 16-mixed}``)
    on the CPU was refused naming ``--precision 16-mixed``, a flag the user did not type."""
    file = write(tmp_path / "c.yaml", {"trainer": {"precision": "16-mixed"}})
    argv = [arg.format(file=file) for arg in given]
    assert main([*argv, "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err == (
        f"train.py: error: {named.format(file=file)} needs a CUDA GPU (float16 autocast); on the "
        f"CPU: 32-true, 64-true, bf16-mixed, bf16-true, 16-true\n")
    assert sorted(tmp_path.iterdir()) == [Path(file)]


@pytest.mark.skipif(not NO_GPU, reason="this machine has a GPU")
def test_a_gpu_accelerator_on_a_machine_without_one_is_named_as_the_command_gave_it(tmp_path,
                                                                                    capsys):
    assert main(["--trainer.accelerator", "gpu", "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err == ("train.py: error: --trainer.accelerator gpu: this machine "
                                       "has no CUDA GPU; valid choices here: auto, cpu\n")


def test_devices_on_gpus_take_gpu_indices_and_name_the_valid_choices(monkeypatch):
    """On GPUs, GPU indices go on to Lightning (which checks that they exist); a value that is
    none of the forms is named as on the CPU."""
    from lotterynet.config_schema import RunConfig
    from lotterynet.hardware_checks import check_hardware

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    for devices in ("auto", "0,1", "1,", "-1", [0, 1]):
        check_hardware(RunConfig(accelerator="gpu", trainer={"devices": devices}))
    with pytest.raises(ConfigError, match=r"^--devices 'abc' is not a count of CUDA GPUs, auto, "
                                          r"nor GPU indices; valid choices: 1 to 2, auto, or "
                                          r"GPU indices such as 0,1$"):
        check_hardware(RunConfig(accelerator="gpu", trainer={"devices": "abc"}))


@pytest.mark.parametrize("given", [["--devices", "-1"], ["--trainer.devices", "-1"],
                                   ["--trainer.devices=-1"], ["--config", "{file}"]])
def test_minus_one_device_is_every_gpu_in_either_spelling(given, tmp_path, monkeypatch):
    """``--trainer.devices -1`` (read as the number -1, as a config file's ``devices: -1``) was
    refused on GPUs, "--trainer.devices -1 is not a count of CUDA GPUs, auto, nor GPU indices",
    where ``--devices -1`` (read as text) went to Lightning as every GPU: both are every GPU
    (two here, simulated)."""
    from lotterynet.cli import config_from_args
    from lotterynet.config_schema import device_count

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    file = write(tmp_path / "c.yaml", {"devices": -1})
    argv = ["--accelerator", "gpu", *(arg.format(file=file) for arg in given)]
    assert device_count(config_from_args(build_parser().parse_args(argv))) == 2


def test_rank_variables_left_in_the_shell_are_refused(tmp_path, stopped_run, data_dir,
                                                     monkeypatch, capsys):
    """``$LOCAL_RANK`` / ``$NODE_RANK`` that no launcher set: one that is not a rank was a
    traceback, and a leftover ``LOCAL_RANK=1`` (no ``$WORLD_SIZE``) made the run a launched
    rank, which leaves its output folder unchecked: it wrote over another run's checkpoint
    and results."""
    run = tmp_path / "run"
    shutil.copytree(stopped_run, run)
    before = snapshot(run)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    for name, value, said in (
            ("LOCAL_RANK", "1", "$LOCAL_RANK 1: this process would be a rank over 0 of a DDP "
                                "run, but no launcher started it ($WORLD_SIZE is unset), and it "
                                "would leave its output folder unchecked, to rank 0; unset "
                                "LOCAL_RANK and NODE_RANK"),
            ("NODE_RANK", "x", "$NODE_RANK is 'x', not a process rank (a whole number, 0 or "
                               "more); unset it (Lightning and torchrun set it for the ranks "
                               "they start)")):
        with monkeypatch.context() as env:
            env.setenv(name, value)
            assert main([*SMALL, "--epochs", "1", "--data-dir", str(data_dir), "--out",
                         str(run)]) == 2
        assert capsys.readouterr().err == f"train.py: error: {said}\n"
    assert snapshot(run) == before


def test_a_slurm_job_of_several_tasks_is_refused_before_any_work(tmp_path, data_dir,
                                                                 monkeypatch, capsys):
    """``sbatch --ntasks=2`` (``srun`` starts the command twice): Lightning's SLURMEnvironment
    raised its own traceback once the model was built ("RuntimeError: You set `--ntasks=2` in
    your SLURM bash script, but this variable is not supported"). A run is one task that
    launches its own ranks: the job is refused in one line, exit 2, nothing written."""
    for name, value in {**SLURM_BATCH_JOB, "SLURM_NTASKS": "2"}.items():
        monkeypatch.setenv(name, value)
    run = tmp_path / "run"
    assert main([*SMALL, "--epochs", "1", "--data-dir", str(data_dir), "--out", str(run)]) == 2
    assert capsys.readouterr().err == (
        "train.py: error: $SLURM_NTASKS is '2': SLURM starts this command as that many tasks, "
        "but a lotterynet run is one task on one machine, which launches its own DDP ranks "
        "(--devices N); give the job one task (sbatch --ntasks=1) and the CPUs or GPUs its "
        "--devices need\n")
    assert not run.exists()


def test_sync_batchnorm_on_cpu_ranks_is_refused_before_any_work(tmp_path, data_dir):
    """``--trainer.sync_batchnorm true`` under DDP on the CPU ran until torch's
    DistributedDataParallel refused it as the training started ("SyncBatchNorm layers only
    work with GPU modules"): a traceback from every rank, exit 1, ``metrics.csv`` left. It is
    refused with the config (train.py: exit 2, nothing written); on one device, with no DDP and
    nothing to sync, it runs as before."""
    base = {"arch": "fc2", "accelerator": "cpu", "data_dir": str(data_dir),
            "out": str(tmp_path / "run"), "trainer": {"sync_batchnorm": True}}
    with pytest.raises(ConfigError, match=r"^trainer sync_batchnorm true on 2 CPU devices: "
                                          r"torch's SyncBatchNorm runs on CUDA GPUs only; leave "
                                          r"it out on the CPU$"):
        make_config({**base, "devices": 2})
    make_config({**base, "devices": 1})


def test_ddp_from_where_its_ranks_cannot_start_is_refused(tmp_path, data_dir, monkeypatch,
                                                          capsys):
    """DDP starts each rank over 0 by running the program again: ``lotterynet.run.run`` on 2
    devices in a notebook (Lightning's test of one, here made true) printed the run's first
    line, left its folder and raised Lightning's advice of ``ddp_notebook``, which a run
    refuses; from ``python -c`` (or stdin) the rank failed and Lightning SIGKILLed the caller.
    Refused before anything, in one line; a script file or a module starts its ranks."""
    import pytorch_lightning.trainer.connectors.accelerator_connector as connector

    import __main__
    from lotterynet.hardware_checks import check_relaunchable
    from lotterynet.run import run

    config = make_config({"arch": "fc2", "structure": "dense", "accelerator": "cpu",
                          "devices": 2, "data_dir": str(data_dir), "out": str(tmp_path / "run")})
    advice = ("cannot be; run it from a script file (python my_run.py) or a module (python -m "
              "my_run), or on 1 device")
    with monkeypatch.context() as notebook:
        notebook.setattr(sys, "ps1", ">>> ", raising=False)
        notebook.setattr(connector, "_IS_INTERACTIVE", True)
        with pytest.raises(ConfigError, match=re.escape(
                "devices 2: DDP starts each further rank by running the program again, which "
                f"an interactive session (a notebook, the Python prompt) {advice}") + "$"):
            run(config)
    assert capsys.readouterr().out == "" and not (tmp_path / "run").exists()
    monkeypatch.setattr(__main__, "__spec__", None)
    for program in ("-c", "-", ""):
        monkeypatch.setattr(sys, "argv", [program])
        with pytest.raises(ConfigError, match=re.escape(
                "devices 2: DDP starts each further rank by running the program again, which "
                f"python {program or '-'} {advice}") + "$"):
            check_relaunchable(config)
    monkeypatch.setattr(sys, "argv", [__file__])  # a script
    check_relaunchable(config)


@pytest.mark.parametrize("flag, given, control", [
    ("--wandb-group", "a\x1b[31mb", "\x1b"), ("--wandb-project", "p\r", "\r"),
    ("--wandb-entity", "e\x00", "\x00"), ("--wandb-tags", "a,\x7f", "\x7f"),
    ("--wandb-notes", "one\n\ttwo\x9b", "\x9b")])
def test_a_wandb_name_with_a_control_character_is_refused_naming_it(tmp_path, monkeypatch,
                                                                   flag, given, control):
    """A W&B project, entity, group, tags or notes holding a control character (ESC, CR, NUL,
    DEL, a C1 CSI) went to W&B as given, into the run's records (and so its pages); notes keep
    their line breaks and tabs (a description of lines). It is refused in one line naming the
    flag and the character (given here in a config file: an argument cannot hold a NUL)."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    may = " (notes may hold line breaks and tabs)" if flag == "--wandb-notes" else ""
    refused = f"{flag} {given!r} holds the control character {control!r}; remove it{may}"
    file = write(tmp_path / "c.yaml", {"wandb": True, flag[2:].replace("-", "_"): given})
    with pytest.raises(ConfigError, match=f"^{re.escape(refused)}$"):
        make_config(load_yaml(file))
    assert make_config({"wandb": True, "wandb_notes": "one\n\ttwo"}).wandb_notes == "one\n\ttwo"


def test_a_wandb_dir_that_is_a_file_is_refused(tmp_path, data_dir, monkeypatch, capsys):
    """``$WANDB_DIR`` (where a ``--wandb`` run's W&B files go) naming a file is refused before
    any work, as ``--out`` is (W&B warned and wrote into the temporary folder instead)."""
    (tmp_path / "a_file").write_text("x")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "a_file"))
    assert main([*SMALL, "--wandb", "--data-dir", str(data_dir), "--out",
                 str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"$WANDB_DIR '{tmp_path / 'a_file'}': '{tmp_path / 'a_file'}' is a "
                        f"file, not a folder")
    assert "\n" not in err and not (tmp_path / "run").exists()


def test_a_path_with_a_line_break_is_reported_on_one_line(tmp_path, data_dir, capsys):
    """A line break inside a path the user gave is written as ``\\n``: the report stays one
    line (it named the folder over two)."""
    folder = tmp_path / "my\ndata"
    shutil.move(corrupt_mnist(tmp_path, data_dir), folder)
    assert main([*SMALL, "--epochs", "1", "--data-dir", str(folder),
                 "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert f"the files under {tmp_path}/my\\ndata are corrupt" in err
    assert not (tmp_path / "run").exists()


def test_a_key_given_twice_in_a_yaml_file_is_named_at_its_second_line(tmp_path, capsys):
    """A config or sweep file that gives a key twice was refused at the line of the mapping
    that holds it ("line 1, column 1: key 'sparsities' is given twice", the file's first
    line); it names the line and column of the second, and the first's line."""
    config = write(tmp_path / "c.yaml", "epochs: 1\nlr: 0.1\nlr: 0.2\n")
    sweep = write(tmp_path / "s.yaml", "sparsities: [0.5]\nepochs: [1]\nsparsities: [0.9]\n")
    variants = write(tmp_path / "v.yaml", "variants:\n  - structure: dense\n    lr: 0.1\n"
                                          "    lr: 0.2\nsparsities: [0.5]\nepochs: [1]\n")
    for argv, said in (
            (["--config", config], f"config file '{config}' is not valid YAML: line 3, column "
                                   f"1: key 'lr' is given twice (first on line 2)"),
            (["--sweep", sweep], f"sweep file '{sweep}' is not valid YAML: line 3, column 1: "
                                 f"key 'sparsities' is given twice (first on line 1)"),
            (["--sweep", variants], f"sweep file '{variants}' is not valid YAML: line 4, "
                                    f"column 5: key 'lr' is given twice (first on line 3)")):
        assert main([*argv, "--out" if "--config" in argv else "--sweep-out",
                     str(tmp_path / "out")]) == 2
        assert re.match(rf"^train\.py: error: {re.escape(said)}\n$", capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def test_a_config_may_still_use_a_few_aliases(tmp_path):
    """The bound on aliases leaves their everyday use (a value given once, a merge key)."""
    config = tmp_path / "c.yaml"
    config.write_text("base: &b {lr: 0.05, momentum: 0.8}\nmodel: {<<: *b, arch: fc2}\n"
                      "model_kwargs: &k {a: [1, 2]}\n")
    values = load_yaml(config)
    assert values["lr"] == 0.05 and values["arch"] == "fc2" and values["model_kwargs"] == \
        {"a": [1, 2]}


def test_a_config_of_too_many_values_written_out_is_not_said_to_expand_aliases(tmp_path,
                                                                               monkeypatch):
    """A file that writes out more values than the bound (200,000 keys: 3 MB) was refused as
    one whose "aliases (*name) expand it", though it had none."""
    monkeypatch.setattr(ConfigLoader, "MAX_VALUES", 10)
    config = tmp_path / "c.yaml"
    config.write_text("model_kwargs: {a: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}\n")
    with pytest.raises(ConfigError, match=r"^config file '.+c\.yaml' is not valid YAML: line 1, "
                                          r"column 1: it holds more than 10 values; no option "
                                          r"needs that$"):
        load_yaml(config)
    config.write_text("model_kwargs: {a: &a [1, 2], b: [*a, *a, *a]}\n")
    with pytest.raises(ConfigError, match=r": its aliases \(\*name\) expand it to more than 10 "
                                          r"values; no option needs that$"):
        load_yaml(config)


def test_a_config_file_may_not_overwrite_a_run(tmp_path, capsys):
    """A colleague's config holding ``out: <your run>`` and ``overwrite: true`` replaced that
    run's results, ticket, checkpoint and history, no ``--overwrite`` given: a file may not
    set it (``overwrite: false``, what ``--print-config`` writes, reads as before), refused
    before anything is read or written."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text('{"finished": true}')
    config = tmp_path / "c.yaml"
    config.write_text(f"arch: fc2\nepochs: 1\nlimit_train: 64\nval_size: 0\nout: {run}\n"
                      f"overwrite: true\n")
    assert main(["--config", str(config)]) == 2
    assert capsys.readouterr().err == (
        f"train.py: error: config file {str(config)!r} sets overwrite: a file may not replace "
        f"the run in its folder; drop the key and give --overwrite on the command line\n")
    assert [p.name for p in run.iterdir()] == ["results.json"]


def test_a_config_or_sweep_file_over_256_kib_is_refused_in_one_line_unread(tmp_path, capsys):
    """A sweep file of 200,000 keys (3 MB) took 23 s to be refused (PyYAML's parser reads
    about 20,000 values a second) and a 1 TiB config (sparse here) was read whole (a
    MemoryError's traceback, then refused as larger than the memory): both are refused by
    their size, unread; a file of 256 KiB is read. A stack file, which lotterynet writes, is
    bound by the memory alone."""
    from lotterynet.stack_files import read_stack_file

    sweep = write(tmp_path / "s.yaml", "base: {" + ", ".join(f"k{i}: {i}" for i in
                                                           range(200_000)) + "}\n")
    assert main(["--sweep", sweep]) == 2
    assert capsys.readouterr().err == (
        f"train.py: error: sweep file {sweep!r} is 3.0 MiB, more than the 256.0 KiB a config or "
        f"sweep file may be; no option needs that\n")
    config = terabyte_file(tmp_path / "c.yaml")
    with pytest.raises(ConfigError, match=r"^config file '.+c\.yaml' is 1\.0 TiB, more than "
                                          r"the 256\.0 KiB a config or sweep file may be; no "
                                          r"option needs that$"):
        load_yaml(config)
    longest = "epochs: 3\n# " + "x" * (256 * 2**10 - 13) + "\n"
    assert load_yaml(write(config, longest)) == {"epochs": 3}
    stack = terabyte_file(tmp_path / "stack.yaml")
    with pytest.raises(ConfigError, match=rf"^--stack-file '.+stack\.yaml' {LARGER_THAN_MEMORY}"):
        read_stack_file(stack)


@pytest.mark.parametrize("value,named", [
    (Fraction(10**400), "drop_rate=1e+400"), ([0.1, Fraction(-10**400)], "drop_rate[1]=-1e+400")])
def test_a_model_argument_beyond_a_floats_range_is_refused_as_such(value, named):
    """A model argument beyond a float's range (the Python API's: a config file's number is a
    float or an int) was refused as 'model_kwargs drop_rate=Fraction(...) holds NaN or
    infinity', which it does not: check_model_kwargs reports what plain_numbers found."""
    with pytest.raises(ConfigError, match="^" + re.escape(
            f"model_kwargs: argument {named} (a Fraction) is beyond a float's range "
            f"(±1.798e+308)")):
        make_config({"arch": "timm:resnet10t", "model_kwargs": {"drop_rate": value}})


@pytest.mark.parametrize("values,refusal", [
    ({"seed": np.int64(-1)}, "seed must be in [0, 2**32), got -1"),
    ({"epochs": np.float64(1.5)}, "epochs must be an integer, got 1.5"),
    ({"sparsity": np.float32(0.5), "seed": np.int64(3), "subnet_convs": np.True_}, None)])
def test_numpy_numbers_are_read_and_refused_as_the_numbers_they_hold(values, refusal):
    """The Python API's numpy numbers: an integer (``np.int64(3)``) was refused as not one,
    'seed must be an integer, got np.int64(3)', and a refusal showed the value in numpy's
    form; they are the Python numbers they hold (results.json stores those)."""
    if refusal:
        with pytest.raises(ConfigError, match="^" + re.escape(refusal) + "$"):
            make_config({"arch": "lenet5", **values})
    else:
        config = make_config({"arch": "lenet5", **values})
        assert [(config.to_dict()[k], type(config.to_dict()[k])) for k in values] == [
            (0.5, float), (3, int), (True, bool)]


def test_an_integer_beyond_a_floats_range_is_refused_as_a_number(tmp_path, capsys):
    """A config file's (or the Python API's) integer too large for a float, as a number field
    or in a sweep's list, ended in a traceback (OverflowError: int too large to convert to
    float); one of over 4,300 digits, which Python does not write as text, too."""
    huge = 10**400
    for value, size in ((huge, 400), (-(10**5000), 5000)):
        with pytest.raises(ConfigError, match=re.escape(
                "sparsity must be a number within a float's range (±1.798e+308), got an "
                f"integer of about 10^{size}")):
            make_config({"arch": "fc2", "sparsity": value})
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(f"sparsities: [{huge}]\n")
    assert main(["--sweep", str(sweep), "--sweep-out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"sparsities: {huge} is not valid; sparsities must be numbers in [0, 1)" in err
    assert len(err.strip().splitlines()) == 1


def test_numbers_with_an_exponent_are_numbers(tmp_path):
    """``1e-3`` is a float in a config file, a sweep file and ``--trainer.KEY VALUE`` (YAML 1.1
    read it as a string: lr 1e-3 and gradient_clip_val 1e-6 were refused as not numbers)."""
    config = tmp_path / "c.yaml"
    config.write_text("lr: 1e-3\nweight_decay: 5E-4\n")
    assert load_yaml(config) == {"lr": 0.001, "weight_decay": 0.0005}
    other = tmp_path / "o.yaml"
    other.write_text("a: 1.0e6\nb: '1e-3'\n")
    assert load_yaml(other) == {"a": 1e6, "b": "1e-3"}  # (quoted: a string)
    assert main(["--arch", "fc2", "--config", str(config), "--trainer.gradient_clip_val", "1e-6",
                 "--out", str(tmp_path / "run"), "--print-config"]) == 0


def test_printed_strings_that_look_like_numbers_read_back_as_strings(tmp_path, capsys):
    """--print-config wrote a folder or W&B name ``1e3`` bare, which --config reads back as the
    number 1000.0 (YAML 1.2) and refused ('out must be a string'); it is quoted now."""
    assert main(["--arch", "fc2", "--out", "1e3", "--data-dir", "5E-2", "--wandb",
                 "--wandb-group", "1e3", "--print-config"]) == 0
    printed = write(tmp_path / "printed.yaml", capsys.readouterr().out)
    assert main(["--config", printed, "--print-config"]) == 0
    assert capsys.readouterr().out == Path(printed).read_text()
    assert load_yaml(printed)["out"] == "1e3"


def test_a_value_ending_in_equals_is_not_an_empty_flag(tmp_path, capsys):
    """``--out=`` is empty; ``--out=runs/a=`` is a folder named ``a=``."""
    assert main(["--arch", "fc2", f"--out={tmp_path}/a=", "--print-config"]) == 0
    assert f"out: {tmp_path}/a=" in capsys.readouterr().out
    assert main(["--arch", "fc2", "--out=", "--print-config"]) == 2


def test_a_value_that_begins_as_a_negative_number_is_a_value(tmp_path, capsys):
    """``--sweep-seeds -1,2`` (a comma list, an exponent: all but ``-1`` and ``-0.5``) was
    taken for a flag: "argument --sweep-seeds: expected one argument", naming neither the
    value nor the ``=`` form, which was read. Both forms now read the value, and its own check
    names it."""
    for argv, said in ((["--sweep-seeds", "-1,2", "--sweep-sparsities", "0.5"],
                        "--sweep-seeds: -1 is not valid; seeds must be integers in [0, 2**32)"),
                       (["--sweep-sparsities", "-0.0,0"], "--sweep-sparsities: -0.0 and 0 are "
                                                          "the same sparsity, listed twice"),
                       (["--lr", "-1e-3"], "lr must be a positive finite number, got -0.001")):
        for spelled in (argv, [f"{argv[0]}={argv[1]}", *argv[2:]]):
            assert main([*spelled, "--sweep-out", str(tmp_path / "sweep")] if "--lr" not in argv
                        else [*spelled, "--out", str(tmp_path / "run")]) == 2
            assert re.match(rf"^train\.py: error: {re.escape(said)}\n$",
                            capsys.readouterr().err), spelled
    assert list(tmp_path.iterdir()) == []


def test_a_value_that_begins_with_a_dash_names_its_flag_and_the_equals_form(capsys):
    """``--out -x`` (a folder named ``-x``) was "argument --out: expected one argument",
    naming neither the value nor the ``--out=-x`` form, which is read; so for every flag that
    takes a value, of train.py and of the module commands. A value argparse reads as a value
    (with a space, a negative number) is still one, and so is the ``=`` form."""
    from lotterynet import approximate, targets

    for flag in ("--out", "--data-dir", "--config", "--resume", "--sweep-out", "--stack-file",
                 "--arch"):
        assert main([flag, "-x", "--print-config"]) == 2
        assert capsys.readouterr().err == (
            f"train.py: error: {flag} -x: '-x' begins with '-' and reads as a flag, not as "
            f"{flag}'s value; to give it, write {flag}=-x\n")
    for command, argv in ((approximate.main, ["table", "--out", "-x"]),
                          (targets.main, ["pensia_fc2", "--targets-dir", "-x"])):
        with pytest.raises(SystemExit) as exit_info:
            command(argv)
        flag = argv[-2]
        assert exit_info.value.code == 2 and capsys.readouterr().err == (
            f"python -m lotterynet.{command.__module__.split('.')[-1]}: error: {flag} -x: '-x' "
            f"begins with '-' and reads as a flag, not as {flag}'s value; to give it, write "
            f"{flag}=-x\n")
    for given in (["--out=-x"], ["--out", "-x y"]):
        assert main(["--arch", "fc2", *given, "--print-config"]) == 0
        assert f"out: {given[-1].removeprefix('--out=')}\n" in capsys.readouterr().out


def test_a_dash_value_of_an_abbreviated_or_list_flag_names_the_flag_and_the_equals_form(
        capsys):
    """``--ou -x`` (argparse reads ``--ou`` as ``--out``) and a list flag's ``--exclude -x``
    (``python -m lotterynet.approximate ... --only -x``) kept argparse's "expected one
    argument" / "expected at least one argument", where ``--out -x`` named the ``=`` form:
    they name the flag read and its ``=`` form too, which is read (a list of that one value)."""
    from lotterynet import approximate

    for given, flag in (("--ou", "--out"), ("--exclude", "--exclude")):
        assert main(["--arch", "timm:resnet18", given, "-x", "--print-config"]) == 2
        assert capsys.readouterr().err == (
            f"train.py: error: {given} -x: '-x' begins with '-' and reads as a flag, not as "
            f"{flag}'s value; to give it, write {flag}=-x\n")
    with pytest.raises(SystemExit) as exit_info:
        approximate.main(["table", "--only", "-x"])
    assert exit_info.value.code == 2 and capsys.readouterr().err == (
        "python -m lotterynet.approximate: error: --only -x: '-x' begins with '-' and reads as "
        "a flag, not as --only's value; to give it, write --only=-x\n")
    assert main(["--arch", "timm:resnet18", "--ou=-x", "--exclude=-x", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert (printed["out"], printed["model"]["exclude"]) == ("-x", ["-x"])


def test_a_value_that_is_no_number_names_what_the_flag_takes(capsys):
    """argparse's "argument --sparsity: invalid float value: 'abc'" named the value but not
    what the flag takes: the line says it is not a number (an integer) and gives the flag's
    help, its range where it has one (train.py's flags, theory's alike)."""
    from lotterynet import theory

    assert main(["--sparsity", "abc"]) == 2
    assert capsys.readouterr().err == (
        "train.py: error: --sparsity 'abc' is not a number: fraction of maskable weights "
        "PRUNED, in [0, 1) (0.9 keeps 10%) (default: 0.5)\n")
    assert main(["--epochs", "1.5"]) == 2
    assert capsys.readouterr().err == ("train.py: error: --epochs '1.5' is not an integer: "
                                       "training epochs (default: 10)\n")
    with pytest.raises(SystemExit) as exit_info:
        theory.main(["--epsilon", "abc"])
    assert exit_info.value.code == 2 and capsys.readouterr().err == (
        "python -m lotterynet.theory: error: --epsilon 'abc' is not a number: approximation "
        "error ε: table, of the target's outputs (0.01); study, of each point of the grid −1, "
        "−1+ε, …, 1 (0.05)\n")


def test_equal_values_listed_twice_are_named_as_they_were_written(tmp_path, capsys):
    """``--sweep-sparsities -0.0,0`` said "0.0 is listed twice", a value given neither way,
    and ``--sweep-seeds 1,01`` "1 is listed twice", without saying that the two are one: a
    flag's items are named as written, a sweep file's by their values (``0`` and ``0.0``); the
    same spelling twice is said as before."""
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("variants: [dense]\nsparsities: [0, 0.0]\nepochs: [1]\n")
    for argv, said in (
            (["--sweep-sparsities", "-0.0,0"],
             "--sweep-sparsities: -0.0 and 0 are the same sparsity, listed twice"),
            (["--sweep-sparsities", "0.5, .50"],
             "--sweep-sparsities: 0.5 and .50 are the same sparsity, listed twice"),
            (["--sweep-epochs", "1,2,01"],
             "--sweep-epochs: 1 and 01 are the same epoch budget, listed twice"),
            (["--sweep-seeds", "1,01"], "--sweep-seeds: 1 and 01 are the same seed, listed twice"),
            (["--sweep-seeds", "3, 3"], "--sweep-seeds: 3 is listed twice"),
            (["--sweep", str(sweep)], f"sweep file {str(sweep)!r}: sparsities: 0 and 0.0 are "
                                      f"the same sparsity, listed twice")):
        assert main([*argv, "--sweep-out", str(tmp_path / "out")]) == 2
        assert re.match(rf"^train\.py: error: {re.escape(said)}\n$", capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == [sweep]


def test_corrected_rerun_works_after_a_refusal(tmp_path, data_dir, capsys):
    out = tmp_path / "run"
    base = [*SMALL, "--epochs", "1", "--data-dir", str(data_dir), "--out", str(out)]
    assert main([*base, "--momentum", "-0.5"]) == 2
    assert main([*base, "--accelerator", "tpu"]) == 2
    assert main(base) == 0 and (out / "results.json").is_file()


def test_subprocess_errors_have_no_traceback_and_help_is_fast(tmp_path):
    for argv in (["--lr", "nan"], ["--config", write(tmp_path / "k.yaml", {1: 2})],
                 ["--resume", write(tmp_path / "x.ckpt", b"PK\x03\x04garbage")]):
        proc = subprocess.run([sys.executable, "train.py", *argv, "--out", str(tmp_path / "o")],
                              cwd=REPO, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run([sys.executable, "train.py", "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert proc.returncode == 0 and "--resume" in proc.stdout
    # CPU seconds, not wall-clock, so a busy machine does not decide (unloaded: ~0.3 s wall)
    assert after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime < 1.0
    # the command line imports no torch; a bad flag or sweep is refused before Lightning is
    proc = subprocess.run([sys.executable, "-c", "import sys, lotterynet.cli as cli; "
                           "print('torch' in sys.modules); print(cli.main(['--lr', 'nan'])); "
                           "print(cli.main(['--sweep-variants', 'nope', '--sweep-sparsities', "
                           "'0.5', '--sweep-epochs', '1'])); "
                           "print('pytorch_lightning' in sys.modules)"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.stdout.split() == ["False", "2", "2", "False"], proc.stderr
