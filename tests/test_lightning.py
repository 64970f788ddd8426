"""lotterynet the way a Lightning user takes it: the LightningModule and the DataModule alone
under a plain ``pl.Trainer``, the Trainer's own options from a config file, and the defaults
that one architecture family or the other gets."""

import csv
import io
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import yaml
from torch import nn

import lotterynet as ln
from conftest import SLURM_BATCH_JOB
from lotterynet.checkpointing import atomic_torch_save
from lotterynet.cli import build_parser, config_from_args
from lotterynet.datamodule import EVAL_BATCH, EpochPermutation, TensorDataModule, load_or_download
from lotterynet.errors import CheckpointError
from lotterynet.models import MODELS, build_model
from lotterynet.module import check_images, mask_digest
from lotterynet.params import count_params
from lotterynet.timm_models import create_timm_model

TIMM = "mobilenetv3_small_050"


def test_readme_timm_example_builds_the_dense_edge_popup_model():
    """``--arch timm:X --sparsity 0.9`` without --structure: every conv and linear weight of
    the timm model is maskable once (edge-popup), not the subset-sum structure's ~5x."""
    config = config_from_args(build_parser().parse_args(["--arch", f"timm:{TIMM}",
                                                         "--sparsity", "0.9"]))
    assert config.structure == "dense"
    from lotterynet.run import model_spec

    spec = model_spec(config, TensorDataModule("mnist"))
    plain = create_timm_model(TIMM, seed=0, img_size=28, in_chans=1, num_classes=10)
    weights = sum(m.weight.numel() for m in plain.modules()
                  if isinstance(m, nn.Conv2d | nn.Linear))
    assert count_params(build_model(**spec))["maskable"] == weights


@pytest.mark.parametrize("structure", ["dense", "wide"])
def test_a_config_files_option_of_another_structure_is_left_out_of_the_spec(structure):
    """pensia_fc2.yaml sets activation: identity, which a config file may give any structure:
    the spec of a dense or wide run leaves it out, which the dense layers would refuse (its
    layers ignored it before they refused such options)."""
    from lotterynet.run import model_spec

    config_file = Path(__file__).resolve().parent.parent / "configs" / "pensia_fc2.yaml"
    config = config_from_args(build_parser().parse_args(
        ["--config", str(config_file), "--structure", structure]))
    assert config.activation == "identity"
    spec = model_spec(config, TensorDataModule("mnist"))
    assert spec["structure"] == "dense" and "activation" not in spec
    assert spec.get("width") == (2508 if structure == "wide" else None)  # (as the paper's)
    build_model(**spec)


def test_paper_archs_keep_the_subset_sum_default():
    for arch, structure in (("fc2", "subsetsum"), ("lenet5", "subsetsum"), ("conv4", "dense")):
        config = config_from_args(build_parser().parse_args(["--arch", arch]))
        assert config.structure == structure, arch


def test_adam_is_adam_and_adamw_is_adamw():
    from lotterynet.optim import OPTIMIZERS

    params = [nn.Parameter(torch.zeros(2))]
    settings = dict(lr=1e-3, momentum=0.9, weight_decay=0.01)
    assert type(OPTIMIZERS.get("adam")(params, **settings)) is torch.optim.Adam
    assert type(OPTIMIZERS.get("adamw")(params, **settings)) is torch.optim.AdamW


def test_module_and_datamodule_train_under_a_plain_trainer(tmp_path, data_dir, monkeypatch):
    """The README's use: validate, fit, validate and test under a plain Trainer, which read
    each split once (prepare_data read, normalised and checked both and threw them away, for
    setup to read them again)."""
    reads = []

    def counted(name, root, *, train):
        reads.append(train)
        return load_or_download(name, root, train=train)

    monkeypatch.setattr(ln.datamodule, "load_or_download", counted)
    data = ln.TensorDataModule("mnist", str(data_dir), limit_train=512, val_size=256)
    assert not data.splits  # nothing is read before Lightning's hooks
    module = ln.EdgePopupModule({"name": "fc2", "structure": "dense", "sparsity": 0.5},
                                {"optimizer": "adam", "lr": 1e-2})
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path)
    # a validation before training (its metric states made in inference mode) leaves the fit
    # able to update them
    before = trainer.validate(module, datamodule=data, verbose=False)[0]["val/acc"]
    trainer.fit(module, datamodule=data)
    assert type(trainer.optimizers[0]) is torch.optim.Adam
    assert trainer.lr_scheduler_configs[0].scheduler.T_max == 1  # the Trainer's max_epochs
    assert trainer.validate(module, datamodule=data, verbose=False)[0]["val/acc"] > before + 0.2
    tested = trainer.test(module, datamodule=data, verbose=False)[0]
    assert tested["test/acc"] > 0.5
    assert reads == [True, False]



@pytest.mark.parametrize("spec, optim, said", [
    ({"structure": "dense"}, None, "as 'name' (one of conv2, "),
    ({"name": "fc2"}, {"epochs": -2}, "epochs (the schedule's length) must be a positive"),
    ({"name": "fc2"}, {"epochs": 0}, "got 0"),
    ({"name": "fc2"}, {"lr": "0.1"}, "lr must be a positive finite number, got '0.1'"),
    ({"name": "fc2"}, {"lr": -0.1}, "lr must be a positive finite number, got -0.1"),
    ({"name": "fc2"}, {"lr": 0}, "lr must be a positive finite number, got 0"),
    ({"name": "fc2"}, {"lr": math.nan}, "lr must be a positive finite number, got nan"),
    ({"name": "fc2"}, {"momentum": 1.0}, "momentum must be a finite number in [0, 1), got 1.0"),
    ({"name": "fc2"}, {"weight_decay": -1e-4}, "weight_decay must be a finite number >= 0"),
])
def test_module_settings_are_checked_when_built(spec, optim, said):
    """Before: epochs -2 trained a schedule of length -2, epochs 0 was read as None, a string
    lr failed inside torch at the first step, a spec without a name in build_model; momentum 1
    failed inside fit. The numbers are checked as train.py's flags are (one check,
    optim.check_optim): lr 0, which train.py refuses, was taken (a model that never moves),
    and a NaN lr was refused as a value a ticket cannot hold, not as an lr."""
    with pytest.raises(ValueError, match=re.escape(said)):
        ln.EdgePopupModule(spec, optim)


@pytest.mark.parametrize("sealed", [False, True])
@pytest.mark.parametrize("damage", [None, "flip", "truncate", "ticket", "spec", "object"])
def test_load_from_checkpoint_checks_the_file_and_unpickles_nothing(tmp_path, sealed, damage):
    """``EdgePopupModule.load_from_checkpoint`` reads a checkpoint as ``--resume`` does: a
    byte changed in a weight, in a checkpoint of your own Trainer (no digest: its zip CRC-32s)
    or of a run (sealed), is refused; it loaded as a changed weight (torch does not check the
    CRCs). A truncated file or a ticket is one line, not torch's failure deep in its loader.
    A ``spec`` of another sparsity loaded the checkpoint's (``k`` is in the state dict) under
    its own. A file object's bytes are checked alike (it failed in ``Path()``), and so are a
    URL's (a ``file://`` one was 'not found', then loaded unchecked: a changed byte, another
    spec). One holding what a weights-only load refuses (a callback's numpy number) was called
    corrupt: it says what it holds."""
    spec = {"name": "fc2", "width": 4, "structure": "dense"}
    module = ln.EdgePopupModule(spec)
    checkpoint = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
                  "pytorch-lightning_version": pl.__version__}
    if damage == "object":
        checkpoint["callbacks"] = {"EarlyStopping": {"best_score": np.float64(0.9)}}
    path = tmp_path / "last.ckpt"
    if sealed:
        atomic_torch_save(checkpoint, path)
    else:
        torch.save(checkpoint, path)
    data = bytearray(path.read_bytes())
    if damage == "flip":
        scores = module.state_dict()["model.1.structure.weight.scores"]
        data[data.index(scores.numpy().tobytes())] ^= 1
    elif damage == "truncate":
        del data[len(data) // 2:]
    elif damage == "ticket":
        ln.save_ticket(module.model, tmp_path / "model.ticket")
        data = (tmp_path / "model.ticket").read_bytes()
    path.write_bytes(data)
    if damage is None:
        for source in path, io.BytesIO(data), path.as_uri():
            loaded = ln.EdgePopupModule.load_from_checkpoint(source, weights_only=False)
            assert all(torch.equal(t, module.state_dict()[k])
                       for k, t in loaded.state_dict().items())
        with pytest.raises(TypeError, match="cannot be called on an instance"):
            module.load_from_checkpoint(path)  # (as Lightning's: it loads nothing into module)
        return
    said = {"flip": "is corrupt: its .* not match its (CRC-32|integrity digest)",
            "truncate": "(corrupt or unreadable|has no lotterynet integrity digest)",
            "ticket": "is a ticket", "spec": "spec['sparsity'] = 0.5, not 0.9",
            "object": r"holds Python objects that a weights-only load refuses \(numpy\.\S*"
                      r"scalar\).* weights_only=False, which torch\.load, EdgePopupModule\."
                      r"load_from_checkpoint"}[damage]
    other = {"spec": {**spec, "sparsity": 0.9}} if damage == "spec" else {}
    for source in path, io.BytesIO(data), path.as_uri():
        with pytest.raises(CheckpointError, match=re.escape(said) if other else said):
            ln.EdgePopupModule.load_from_checkpoint(source, **other)
    with pytest.raises(CheckpointError, match=r"^(checkpoint )?'<file object>' "):
        ln.EdgePopupModule.load_from_checkpoint(io.BytesIO(data), **other)
    missing = (tmp_path / "gone.ckpt").as_uri()
    with pytest.raises(CheckpointError, match=f"^checkpoint {re.escape(repr(missing))} not found$"):
        ln.EdgePopupModule.load_from_checkpoint(missing)


@pytest.mark.parametrize("sealed", [False, True])
def test_load_from_checkpoint_of_a_file_without_lightnings_version_is_one_line(tmp_path, sealed):
    """A checkpoint without the ``pytorch-lightning_version`` Lightning's load reads first (a
    run's ``last.ckpt`` saved again without it) was a bare ``KeyError:
    'pytorch-lightning_version'`` traceback from deep in Lightning: it is one line naming the
    file and what it lacks."""
    module = ln.EdgePopupModule({"name": "fc2", "width": 4, "structure": "dense"})
    checkpoint = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}
    path = tmp_path / "last.ckpt"
    (atomic_torch_save if sealed else torch.save)(checkpoint, path)
    said = (f"checkpoint {str(path)!r} is not a Lightning checkpoint: it holds no "
            f"'pytorch-lightning_version', which Lightning's load reads first (a file of your "
            f"own: store pytorch_lightning.__version__ there)")
    with pytest.raises(CheckpointError, match=f"^{re.escape(said)}$"):
        ln.EdgePopupModule.load_from_checkpoint(path)


def test_load_from_checkpoint_of_a_file_without_a_spec_is_one_line_unless_one_is_given(
        tmp_path):
    """A checkpoint whose hyperparameters hold no ``spec`` (not saved from an EdgePopupModule)
    was a bare ``TypeError: EdgePopupModule.__init__() missing 1 required positional argument:
    'spec'``: it is one line naming the file and saying to give ``spec=``, which then loads it."""
    module = ln.EdgePopupModule({"name": "fc2", "width": 4, "structure": "dense"})
    hparams = {k: v for k, v in module.hparams.items() if k != "spec"}
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": hparams,
                "pytorch-lightning_version": pl.__version__}, path)
    said = (f"checkpoint {str(path)!r} holds no model spec (no 'spec' in its "
            f"'hyper_parameters': not saved from an EdgePopupModule); give the model's as "
            f"spec=...")
    with pytest.raises(CheckpointError, match=f"^{re.escape(said)}$"):
        ln.EdgePopupModule.load_from_checkpoint(path)
    loaded = ln.EdgePopupModule.load_from_checkpoint(path, spec=dict(module.hparams.spec))
    for name, tensor in module.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


def test_load_from_checkpoint_lets_its_own_parse_go_before_lightning_parses(tmp_path,
                                                                            monkeypatch):
    """``EdgePopupModule.load_from_checkpoint`` parses the checked bytes, then Lightning parses
    them again (its API takes a file, not the contents): the first parse was held through the
    second, three copies of the checkpoint in memory at once (the bytes and two parses)."""
    import weakref

    from pytorch_lightning.core import saving

    import lotterynet.module as module_file

    module = ln.EdgePopupModule({"name": "fc2", "width": 4, "structure": "dense"})
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
                "pytorch-lightning_version": pl.__version__}, path)
    parse, load = module_file.parse_checkpoint, saving.pl_load
    ours, held = [], []

    def parsing(*args, **kwargs):
        checkpoint = parse(*args, **kwargs)
        ours.append(weakref.ref(next(iter(checkpoint["state_dict"].values()))))
        return checkpoint

    def lightnings(*args, **kwargs):
        held.append(ours[0]() is not None)
        return load(*args, **kwargs)

    monkeypatch.setattr(module_file, "parse_checkpoint", parsing)
    monkeypatch.setattr(saving, "pl_load", lightnings)
    ln.EdgePopupModule.load_from_checkpoint(path)
    assert held == [False]


def test_load_from_checkpoint_keeps_a_float64_checkpoints_dtype_and_masks(tmp_path):
    """A ``64-true`` run's checkpoint loaded with ``load_from_checkpoint`` came back float32:
    scores apart by less than float32 resolves (1 + i * 1e-12) rounded to one value, and the
    top-k kept other weights (another mask digest, another network). It loads as float64,
    its scores and masks bit for bit."""
    module = ln.EdgePopupModule({"name": "fc2", "width": 8, "structure": "dense",
                                 "sparsity": 0.5}).double()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("scores"):
                order = torch.randperm(p.numel(), generator=generator, dtype=torch.float64)
                p.copy_(1 + order.reshape(p.shape) * 1e-12)
    path = tmp_path / "last.ckpt"
    atomic_torch_save({"state_dict": module.state_dict(), "hyper_parameters": dict(
        module.hparams), "pytorch-lightning_version": pl.__version__}, path)
    loaded = ln.EdgePopupModule.load_from_checkpoint(path)
    assert loaded.dtype == torch.float64
    assert all(torch.equal(t, module.state_dict()[k]) and t.dtype == torch.float64
               for k, t in loaded.state_dict().items() if t.is_floating_point())
    assert mask_digest(loaded.model) == mask_digest(module.model)


@pytest.mark.parametrize("spec", [{"name": "lenet5", "sparsity": 0.5},
                                  {"name": "fc2", "width": 4, "trained": True}])
def test_unfreeze_after_freeze_trains_what_the_model_is_built_to_train(spec):
    """Lightning's ``freeze()`` then ``unfreeze()`` made every parameter require grad, LeNet5's
    frozen random weights too, so its next training forward was refused ("its frozen random
    weight 'structure.weight.weight' requires grad"); unfreeze gives back the build's: the
    scores (and LeNet5's frozen convolutions stay frozen), a baseline's weights."""
    module = ln.EdgePopupModule(spec)
    built = {name: p.requires_grad for name, p in module.named_parameters()}
    module.freeze()
    assert not module.training and not any(p.requires_grad for p in module.parameters())
    module.unfreeze()
    assert module.training and {n: p.requires_grad for n, p in module.named_parameters()} == built
    module(torch.randn(2, 1, 28, 28)).sum().backward()
    assert {n for n, p in module.named_parameters() if p.grad is not None} == {
        n for n, trains in built.items() if trains}


@pytest.mark.parametrize("arch, lr", [("lenet5", 0.01), ("fc2", 0.1)])
def test_module_takes_the_run_defaults_of_its_architecture(arch, lr):
    """Without an lr the module trained LeNet5 at 0.1, ten times the recipe's 0.01 that
    ``train.py --arch lenet5`` uses: the settings it is not given are a run's."""
    from lotterynet.config_schema import RunConfig
    from lotterynet.optim import optim_settings

    optim = ln.EdgePopupModule({"name": arch}).hparams.optim
    assert optim == {**optim_settings(RunConfig(arch=arch)), "epochs": None}
    assert optim["lr"] == lr


@pytest.mark.parametrize("kwargs, said", [
    (dict(limit_train=10**6), "limit_train 1000000 is more than the 55,000 training examples "
                              "of mnist (val_size 5000 held out); leave it out to train on all"),
    (dict(val_size=60000), "val_size must be in [0, 60000) for mnist, got 60000"),
    (dict(val_size=-1), "val_size must be in [0, 60000) for mnist, got -1"),
    (dict(val_size=5.0), "val_size must be an integer, got 5.0"),
    (dict(seed="0"), "seed must be an integer, got '0'"),
    (dict(seed=-1), "seed must be in [0, 2**32), got -1"),
    (dict(seed=2**32), "seed must be in [0, 2**32), got 4294967296"),
    (dict(download="no"), "download must be True or False, got 'no'"),
])
def test_data_module_sizes_are_checked_when_built(kwargs, said):
    """A limit above the training split was taken silently (train.py's flag refuses it), a
    validation split of the whole set was refused only in setup. A seed of another type, or
    past what the epoch's permutation seed (seed * 1_000_003 + epoch) and the augmentation's
    batch seeds take, failed in the first training epoch (TypeError, an overflow, struct.error
    with augment)."""
    error = TypeError if isinstance(kwargs.get("seed"), str) else ValueError
    with pytest.raises(error, match=re.escape(said)):
        ln.TensorDataModule("mnist", **kwargs)
    if "seed" in kwargs:
        assert ln.TensorDataModule("mnist", seed=2**32 - 1).seed == 2**32 - 1  # the bound's own


def test_an_architecture_without_num_classes_is_refused_naming_it(monkeypatch):
    """A registered builder without a num_classes argument failed with KeyError: 'num_classes'
    (then, with spec_value, built a module of None classes)."""
    monkeypatch.setitem(MODELS._entries, "mine", lambda **kwargs: nn.Linear(4, 2))
    with pytest.raises(ValueError, match="architecture 'mine' takes no num_classes, which the "
                                         "module's accuracy needs"):
        ln.EdgePopupModule({"name": "mine"})


def test_numpy_numbers_in_a_spec_are_kept_as_python_numbers(tmp_path):
    """A sparsity from np.linspace (np.float64), an np.int64 seed and width and an np.float32
    lr stayed numpy scalars in the module's hyperparameters and the model's spec: its
    checkpoints did not load with torch.load(weights_only=True) (nor load_from_checkpoint,
    'Unsupported global: numpy._core.multiarray.scalar'), and save_ticket refused the model
    after its training ('not JSON-able')."""
    spec = {"name": "fc2", "width": np.int64(4), "structure": np.str_("dense"),
            "sparsity": np.linspace(0, 1, 5)[2], "seed": np.int64(3), "trained": np.False_}
    module = ln.EdgePopupModule(spec, {"lr": np.float32(0.5), "epochs": np.int64(2)})
    torch.save(dict(module.hparams), tmp_path / "hparams.pt")
    saved = torch.load(tmp_path / "hparams.pt", weights_only=True)
    assert saved["spec"] == module.model.spec == {**spec, "width": 4, "sparsity": 0.5, "seed": 3}
    keys = ("width", "structure", "sparsity", "seed", "trained")
    for got in (saved["spec"], module.model.spec):
        assert [type(got[key]) for key in keys] == [int, str, float, int, bool]
    assert (type(saved["optim"]["lr"]), type(saved["optim"]["epochs"])) == (float, int)
    ln.save_ticket(module.model, tmp_path / "model.ticket")
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(ln.load_ticket(tmp_path / "model.ticket").eval()(x), module.model.eval()(x))


def test_the_training_loader_iterated_again_serves_the_next_epoch(data_dir):
    """In a loop of your own (no Lightning to call set_epoch), each pass over the data
    module's training loader was the same epoch 0 order; a whole pass now ends its epoch, as a
    shuffling DataLoader reshuffles. A pass cut short (Lightning's batch limits) does not."""
    data = ln.TensorDataModule("mnist", str(data_dir), limit_train=256, val_size=64, seed=3)
    data.setup()
    loader = data.train_dataloader()
    labels = data.splits["train"][1]
    for epoch in range(2):
        order = EpochPermutation(256, shuffle=True, seed=3)
        order.set_epoch(epoch)
        assert torch.equal(torch.cat([y for _, y in loader]), labels[order.indices()])
    next(iter(loader))
    assert loader.sampler.epoch == 2


def test_overfit_batches_train_on_the_same_first_batches_every_epoch(tmp_path, data_dir):
    """A Trainer's ``overfit_batches=2`` trains every epoch on the training split's first two
    batches, in order, as Lightning's unshuffled ``DataLoader`` would: they were a new shuffle
    every epoch (Lightning's warning said it turned shuffling off; it could not)."""
    class Batches(pl.Callback):
        def __init__(self):
            self.seen = []

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            self.seen.append((trainer.current_epoch, batch[1].clone()))

    data = ln.TensorDataModule("mnist", str(data_dir), limit_train=256, val_size=64,
                               batch_size=32)
    batches = Batches()
    pl.Trainer(max_epochs=2, overfit_batches=2, callbacks=[batches], logger=False,
               enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
               default_root_dir=tmp_path).fit(ln.EdgePopupModule({"name": "fc2"}), data)
    labels = data.splits["train"][1]
    assert [epoch for epoch, _ in batches.seen] == [0, 0, 1, 1]
    for i, (_, y) in enumerate(batches.seen):
        assert torch.equal(y, labels[i % 2 * 32:(i % 2 + 1) * 32])


def test_own_trainer_misfits_are_one_line_and_predict_gives_logits(tmp_path, data_dir):
    """A Trainer bounded by max_steps (or max_time) alone has no epochs for the cosine schedule
    (it annealed over max_epochs=-1: the rate was 0 every other epoch), and the refusal names
    both; a model of other classes than the data is named in setup (was an IndexError in the
    loss), and so are other input channels
    or another image size (a convolution's or a matrix product's error at the first step).
    ``trainer.predict`` gives the test split's logits, LeNet5's frozen convs run by the data
    module (had no predict), and then your own loader's."""
    data = ln.TensorDataModule("mnist", str(data_dir), limit_train=256, val_size=64)
    options = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                   enable_model_summary=False, default_root_dir=tmp_path)
    for bound in ({"max_steps": 4}, {"max_time": {"minutes": 1}}):
        with pytest.raises(ValueError, match=r"^the cosine schedule needs its length: "
                                             r"optim\['epochs'\] or the Trainer's max_epochs, got "
                                             r"-1 \(a Trainer bounded by max_steps or max_time "
                                             r"only has none\); give one, or "
                                             r"scheduler='constant'$"):
            pl.Trainer(**bound, **options).fit(ln.EdgePopupModule({"name": "fc2"}), data)
    with pytest.raises(ValueError, match="the model has 5 classes, the data set 'mnist' 10"):
        pl.Trainer(max_epochs=1, **options).fit(
            ln.EdgePopupModule({"name": "fc2", "num_classes": 5}), data)
    # (timm's default head has 1000 classes: it trained to 0 % accuracy, taken to have 10)
    with pytest.raises(ValueError, match="the model has 1000 classes, the data set 'mnist' 10"):
        pl.Trainer(max_epochs=1, **options).fit(ln.EdgePopupModule(
            {"name": "timm:resnet10t", "in_chans": 1, "sparsity": 0.9}), data)
    # a model of other images failed at its first step, in torch's words
    with pytest.raises(ValueError, match="the model's in_channels is 3, the data set 'mnist' "
                                         "has 1: build it with in_channels=1"):
        pl.Trainer(max_epochs=1, **options).fit(
            ln.EdgePopupModule({"name": "conv2", "width": 2}), data)
    with pytest.raises(ValueError, match="the model's image_size is 32, the data set 'mnist' "
                                         "has 28: build it with image_size=28"):
        pl.Trainer(max_epochs=1, **options).fit(
            ln.EdgePopupModule({"name": "conv2", "width": 2, "in_channels": 1}), data)
    # (timm drops an img_size that the model does not take: a ResNet takes any size)
    check_images({"name": "timm:resnet10t", "in_chans": 1, "img_size": 224}, data)
    with pytest.raises(ValueError, match="in_chans is 3, .* build it with in_chans=1"):
        check_images({"name": "timm:resnet10t"}, data)
    module = ln.EdgePopupModule({"name": "lenet5", "sparsity": 0.5}, {"epochs": 1})
    trainer = pl.Trainer(max_steps=4, **options)
    trainer.fit(module, datamodule=data)
    logits = torch.cat(trainer.predict(module, datamodule=data))
    images = data.splits["test"][0]
    with torch.no_grad():
        expected = module.eval()(images[:500])
    assert logits.shape == (len(images), 10)
    torch.testing.assert_close(logits[:500], expected, rtol=1e-5, atol=1e-5)
    # your own loader next (Lightning keeps the data module attached): images, whole model
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images[:64]), 32)
    torch.testing.assert_close(torch.cat(trainer.predict(module, loader)), expected[:64],
                               rtol=1e-5, atol=1e-5)


def test_epoch_metrics_cover_every_batch_of_the_epoch(tmp_path, data_dir):
    """The metric objects reach Lightning once per epoch; their values are still the whole
    epoch's. With an lr far below the scores' float32 resolution (lr must be positive) the
    model never changes, so each epoch's accuracy and mean loss are the fixed model's over
    every example of the split — weighted by example: the splits end
    in a shorter batch (620 = 9 x 64 + 44, 1500 = 1000 + 500)."""
    data = ln.TensorDataModule("mnist", str(data_dir), limit_train=620, val_size=1500)
    module = ln.EdgePopupModule({"name": "fc2", "structure": "dense", "sparsity": 0.5},
                                {"lr": 1e-30})
    trainer = pl.Trainer(max_epochs=2, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path)
    trainer.fit(module, datamodule=data)
    logged = {k: float(v) for k, v in trainer.callback_metrics.items()}
    logged.update(trainer.test(module, datamodule=data, verbose=False)[0])
    module.eval()
    for stage, split in (("train", "train"), ("val", "val"), ("test", "test")):
        x, y = data.splits[split]
        with torch.no_grad():
            logits = module(x)
        correct = (logits.argmax(1) == y).float()
        assert logged[f"{stage}/acc"] == pytest.approx(float(correct.mean()), abs=1e-6)
        loss = torch.nn.functional.cross_entropy(logits, y)
        assert logged[ln.module.EPOCH_LOSS[stage]] == pytest.approx(float(loss), rel=1e-5)
        assert float(correct[:64].mean()) != pytest.approx(float(correct.mean()))  # a real test


def test_epoch_loss_is_summed_in_float32_under_a_half_precision(tmp_path, data_dir):
    """Under ``bf16-true`` (the module moved to bfloat16, its metric states with it) the test
    loss is still the mean of the 10 batches' losses: its sums were bfloat16 (2.5312 for
    2.5109 here; a full MNIST epoch's stopped growing)."""
    data = ln.TensorDataModule("mnist", str(data_dir), limit_train=64, val_size=0)
    module = ln.EdgePopupModule({"name": "fc2", "structure": "dense", "sparsity": 0.5})
    trainer = pl.Trainer(precision="bf16-true", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path)
    tested = trainer.test(module, datamodule=data, verbose=False)[0]
    with torch.no_grad():
        losses = [float(torch.nn.functional.cross_entropy(module(x.bfloat16()), y))
                  for x, y in data.test_dataloader()]
    assert len(losses) == 10 and module.dtype == torch.bfloat16
    assert tested["test/loss"] == pytest.approx(sum(losses) / len(losses), rel=1e-5)


def test_own_trainer_resume_in_float64_reaches_the_uninterrupted_run(tmp_path, data_dir):
    """``trainer.fit(ckpt_path=...)`` under ``64-true`` restores the float64 scores as they
    were: the resumed run ends bit for bit where the uninterrupted one does (they came back
    rounded to float32, ~3e-9 off after the second epoch)."""
    spec = {"name": "fc2", "structure": "dense", "sparsity": 0.5}

    def fit(epochs: int, ckpt_path=None, **options):
        module = ln.EdgePopupModule(spec, {"epochs": 2})
        data = ln.TensorDataModule("mnist", str(data_dir), limit_train=320, val_size=0)
        pl.Trainer(max_epochs=epochs, precision="64-true", logger=False,
                   enable_progress_bar=False, enable_model_summary=False,
                   default_root_dir=tmp_path, **options).fit(module, data, ckpt_path=ckpt_path)
        return module.model.state_dict()

    straight = fit(2, enable_checkpointing=False)
    fit(1, callbacks=[pl.callbacks.ModelCheckpoint(tmp_path / "ck", save_last=True)])
    resumed = fit(2, tmp_path / "ck" / "last.ckpt", enable_checkpointing=False)
    assert all(torch.equal(resumed[k], v) for k, v in straight.items())


@pytest.mark.parametrize("spec, optim, said", [
    ({"seed": 0, "pairs": 5, "activation": "relu"}, {}, None),  # its defaults, spelled out
    ({"sparsity": 0.9}, {}, "spec['sparsity'] = 0.5, not 0.9"),
    ({"seed": 1}, {}, "spec['seed'] = 0, not 1"),
    ({}, {"lr": 0.5}, "optim['lr'] = 0.1, not 0.5"),
    ({}, {"optimizer": "adam"}, "optim['optimizer'] = 'sgd', not 'adam'"),
    ({}, {}, "does not match its CRC-32"),  # a byte of a weight changed
])
def test_own_trainer_resume_of_another_module_or_a_damaged_file_is_refused(tmp_path, spec,
                                                                            optim, said):
    """``trainer.fit(module, ckpt_path=...)`` with a module of another spec or optimizer than
    the checkpoint's: another sparsity or seed loaded silently (``k`` and the frozen weights
    are in the state dict: the module trained the checkpoint's model under its own spec),
    another lr was replaced by the restored one, another optimizer failed inside torch
    (``KeyError: 'step'``). A changed byte in a weight loaded silently too (Lightning reads
    the file with torch.load alone). Refused in one line, before anything is loaded."""
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    base = {"name": "fc2", "width": 4, "structure": "subsetsum", "sparsity": 0.5}

    def fit(module, epochs, ckpt_path=None, **options):
        pl.Trainer(max_epochs=epochs, logger=False, enable_progress_bar=False,
                   enable_model_summary=False, default_root_dir=tmp_path, **options).fit(
            module, torch.utils.data.DataLoader(list(zip(x, y)), batch_size=4),
            ckpt_path=ckpt_path)

    fit(ln.EdgePopupModule(base, {"epochs": 2}), 1,
        callbacks=[pl.callbacks.ModelCheckpoint(tmp_path, save_last=True)])
    module = ln.EdgePopupModule({**base, **spec}, {"epochs": 2, **optim})
    if said and "CRC-32" in said:
        ckpt = tmp_path / "last.ckpt"
        data = bytearray(ckpt.read_bytes())
        scores = torch.load(ckpt, weights_only=True)["state_dict"]["model.3.structure.u.scores"]
        data[data.index(scores.numpy().tobytes())] ^= 1
        ckpt.write_bytes(data)
    if said is None:
        fit(module, 2, tmp_path / "last.ckpt", enable_checkpointing=False)
        return
    with pytest.raises(CheckpointError, match=re.escape(said)):
        fit(module, 2, tmp_path / "last.ckpt", enable_checkpointing=False)


@pytest.mark.parametrize("damage", [None, "truncate", "flip", "object", "version"])
def test_the_checked_checkpoint_io_checks_a_trainers_ckpt_path_once(tmp_path, monkeypatch,
                                                                    damage):
    """``pl.Trainer(plugins=[ln.CheckedCheckpointIO()])``: a ``ckpt_path`` (a file, or a URL
    read through fsspec) written by a Trainer without it is read once and checked before
    Lightning restores it. Without it (there was no such plugin) a truncated file failed deep
    inside torch, before any module hook, a URL was not checked at all (a changed byte loaded
    as a changed weight), and the module's check read the file a second time. A file saved
    again without Lightning's version was a bare ``KeyError: 'pytorch-lightning_version'``."""
    from lotterynet.checkpointing import load_checkpoint

    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    spec = {"name": "fc2", "width": 4, "structure": "subsetsum", "sparsity": 0.5}

    def fit(epochs, ckpt_path=None, **options):
        pl.Trainer(max_epochs=epochs, logger=False, enable_progress_bar=False,
                   enable_model_summary=False, default_root_dir=tmp_path, **options).fit(
            ln.EdgePopupModule(spec, {"epochs": 2}),
            torch.utils.data.DataLoader(list(zip(x, y)), batch_size=4), ckpt_path=ckpt_path)

    fit(1, callbacks=[pl.callbacks.ModelCheckpoint(tmp_path, save_last=True)])
    path = tmp_path / "last.ckpt"
    checkpoint = torch.load(path, weights_only=True)
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        del data[len(data) // 2:]
    elif damage == "flip":
        scores = checkpoint["state_dict"]["model.3.structure.u.scores"]
        data[data.index(scores.numpy().tobytes())] ^= 1
    elif damage in ("object", "version"):
        if damage == "object":
            checkpoint["callbacks"]["extra"] = {"best": np.float64(0.9)}
        else:
            del checkpoint["pytorch-lightning_version"]
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        data = buffer.getvalue()
    path.write_bytes(data)
    reads = []
    read_bytes = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: reads.append(self) or read_bytes(self))
    checked = ln.CheckedCheckpointIO()
    for source in path, path.as_uri():
        if damage is None:
            fit(2, source, plugins=[checked], enable_checkpointing=False)
            continue
        said = {"truncate": "is corrupt or unreadable", "flip": "does not match its CRC-32",
                "object": "holds Python objects that a weights-only load refuses",
                "version": "is not a Lightning checkpoint: it holds no "
                           "'pytorch-lightning_version', which Lightning's load reads first "
                           r"\(a file of your own: store pytorch_lightning.__version__ there\)$"
                }[damage]
        with pytest.raises(CheckpointError, match=f"^checkpoint {re.escape(repr(str(source)))}"
                                                  f" .*{said}"):
            fit(2, source, plugins=[checked], enable_checkpointing=False)
    assert reads.count(path) == 1  # (the URL: through fsspec)
    if damage is None:  # (its own checkpoint to a URL: written there, as Lightning writes one;
        # it wrote a local folder named 'memory:')
        saving = pl.callbacks.ModelCheckpoint(f"memory://{tmp_path.name}")
        fit(1, plugins=[checked], callbacks=[saving])
        assert load_checkpoint(saving.best_model_path, unsealed=True)["epoch"] == 0


class KeepsAPythonObject(pl.Callback):
    """A user's callback whose state holds what a weights-only load refuses."""

    def __init__(self):
        self.best = None

    def state_dict(self):
        return {"best": np.float64(0.9)}

    def load_state_dict(self, state_dict):
        self.best = state_dict["best"]


def fit_tiny(tmp_path, epochs, ckpt_path=None, weights_only=None, **options):
    """A 2-batch fit of a 4-wide FC2 under a plain Trainer of ``options``."""
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    trainer = pl.Trainer(max_epochs=epochs, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path, **options)
    trainer.fit(ln.EdgePopupModule({"name": "fc2", "width": 4, "structure": "dense"},
                                   {"epochs": 2}),
                torch.utils.data.DataLoader(list(zip(x, y)), batch_size=4),
                ckpt_path=ckpt_path, weights_only=weights_only)
    return trainer


def test_the_checked_checkpoint_io_honours_a_trainers_weights_only_false(tmp_path):
    """A user's callback keeps a Python object in its state: ``fit(ckpt_path=...,
    weights_only=False)``, the user's own choice for their own file, restores it (it was
    refused whatever ``weights_only`` said); the file's bytes are still checked, and without
    that choice it is refused as before."""
    fit_tiny(tmp_path, 1, plugins=[ln.CheckedCheckpointIO()],
             callbacks=[KeepsAPythonObject(), pl.callbacks.ModelCheckpoint(tmp_path,
                                                                           save_last=True)])
    path = tmp_path / "last.ckpt"
    for weights_only in None, True:
        with pytest.raises(CheckpointError, match=r"holds Python objects that a weights-only "
                           r".* weights_only=False, which torch.load, EdgePopupModule."
                           r"load_from_checkpoint and a Trainer's fit, validate, test and "
                           r"predict take$"):
            fit_tiny(tmp_path, 2, path, weights_only, plugins=[ln.CheckedCheckpointIO()],
                     callbacks=[KeepsAPythonObject()], enable_checkpointing=False)
    kept = KeepsAPythonObject()
    fit_tiny(tmp_path, 2, path, False, plugins=[ln.CheckedCheckpointIO()], callbacks=[kept],
             enable_checkpointing=False)
    assert kept.best == 0.9 and isinstance(kept.best, np.float64)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(data)
    with pytest.raises(CheckpointError, match="its bytes do not match its integrity digest"):
        fit_tiny(tmp_path, 2, path, False, plugins=[ln.CheckedCheckpointIO()],
                 callbacks=[KeepsAPythonObject()], enable_checkpointing=False)


def test_the_checked_checkpoint_io_refuses_storage_options_as_lightnings_does(tmp_path):
    """``trainer.save_checkpoint(path, storage_options=...)``: Lightning's own IO refuses the
    options it cannot use (a TypeError); the checked IO dropped them silently for a file and
    wrote it. Now it refuses them alike, writing nothing."""
    trainer = fit_tiny(tmp_path, 1, plugins=[ln.CheckedCheckpointIO()], limit_train_batches=1,
                       enable_checkpointing=False)
    for path in tmp_path / "own.ckpt", f"memory://{tmp_path.name}/own.ckpt":
        with pytest.raises(TypeError, match=r"`storage_options` arg is not supported for "
                                            r"`CheckedCheckpointIO`"):
            trainer.save_checkpoint(path, storage_options={"compression": None})
    assert not (tmp_path / "own.ckpt").exists()


def test_a_checkpoint_counts_the_epochs_it_has_trained_whenever_it_was_saved(tmp_path):
    """``CheckedCheckpointIO().epochs_of`` a checkpoint that ``trainer.save_checkpoint`` wrote
    after a fit said an epoch more than the fit's (its ``epoch`` + 1, right for one saved at an
    epoch's end only, before Lightning counts the epoch completed), as did a resume of it (it
    had trained more epochs than its run's) and its line on a history left behind. Saved at an
    epoch's end (ModelCheckpoint's), within an epoch, at its last batch, or after the fit: the
    epochs it has trained."""
    from lotterynet.checkpointing import epochs_done
    from lotterynet.resumable import progress_fault
    from lotterynet.run_stops import history_left_behind

    class SavesInTheSecondEpoch(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.current_epoch == 1:
                trainer.save_checkpoint(tmp_path / f"batch={batch_idx}.ckpt")

    io = ln.CheckedCheckpointIO()
    trainer = fit_tiny(tmp_path, 2, plugins=[io], callbacks=[
        SavesInTheSecondEpoch(), pl.callbacks.ModelCheckpoint(tmp_path, "{epoch}", save_top_k=-1)])
    trainer.save_checkpoint(tmp_path / "after.ckpt")
    names = ["epoch=0.ckpt", "epoch=1.ckpt", "batch=0.ckpt", "batch=1.ckpt", "after.ckpt"]
    assert [io.epochs_of(tmp_path / name) for name in names] == [1, 2, 1, 2, 2]
    saved = {name: torch.load(tmp_path / name, weights_only=True) for name in names}
    assert [epochs_done(saved[name]) for name in names] == [1, 2, 1, 2, 2]
    assert epochs_done({"epoch": 1}) == 2 and epochs_done({}) == 0  # (no loop states)
    assert progress_fault(saved["after.ckpt"], 2) is None
    assert progress_fault(saved["after.ckpt"], 1) == "it has trained 2 epochs of a run of 1"
    assert history_left_behind((tmp_path / "after.ckpt", saved["after.ckpt"]), tmp_path) == (
        f"--resume {str(tmp_path / 'after.ckpt')!r}: no metrics.csv of its run beside it, so "
        f"{str(tmp_path / 'metrics.csv')!r} begins at epoch 3; the metrics of epochs 1 to 2 "
        f"are in the original run's metrics.csv only")


def test_lr_find_sets_the_lr_the_fit_and_its_checkpoint_take(tmp_path, data_dir):
    """``Tuner(trainer).lr_find`` finds the module's ``lr`` (it found no ``lr`` attribute, and
    its ``attr_name`` cannot name ``hparams.optim['lr']``) and sets it to its suggestion: the
    fit's optimizer starts from it and the checkpoint keeps it (a plain float)."""
    from pytorch_lightning.tuner import Tuner

    data = ln.TensorDataModule("mnist", str(data_dir), limit_train=320, val_size=0,
                               batch_size=16)  # 20 steps an epoch: lr_find's num_training
    module = ln.EdgePopupModule({"name": "fc2", "structure": "dense", "sparsity": 0.5,
                                 "width": 64}, {"optimizer": "adam", "lr": 1e-2})
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path)
    found = Tuner(trainer).lr_find(module, datamodule=data, num_training=20).suggestion()
    assert found != 1e-2 and module.lr == module.hparams.optim["lr"] == found
    trainer.fit(module, datamodule=data)
    assert trainer.optimizers[0].param_groups[0]["initial_lr"] == found
    saved = torch.load(trainer.checkpoint_callback.best_model_path, weights_only=True)
    assert type(saved["hyper_parameters"]["optim"]["lr"]) is float
    assert ln.EdgePopupModule.load_from_checkpoint(
        trainer.checkpoint_callback.best_model_path).lr == found
    with pytest.raises(ValueError, match=r"^lr must be a positive finite number, got -1$"):
        module.lr = -1


def test_clipping_the_fused_sgd_under_a_mixed_precision_is_refused_before_training(tmp_path,
                                                                                  data_dir):
    """``gradient_clip_val`` under ``bf16-mixed`` with the default fused SGD: one line before
    the first step, saying what to change (Lightning refused at that step: "The current
    optimizer, SGD, does not allow for gradient clipping ... Are you using a 'fused'
    optimizer?"); Adam is clipped."""
    data = ln.TensorDataModule("mnist", str(data_dir), limit_train=128, val_size=64)
    spec = {"name": "fc2", "structure": "dense", "sparsity": 0.5, "width": 64}
    trainer = pl.Trainer(max_epochs=1, precision="bf16-mixed", gradient_clip_val=0.5,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path)
    with pytest.raises(ValueError, match=r"^gradient_clip_val 0\.5 with precision 'bf16-mixed' "
                                         r"and optimizer 'sgd': .* give optim\['optimizer'\] "
                                         r"'adam' or 'adamw', or precision '32-true' or "
                                         r"'bf16-true'$"):
        trainer.fit(ln.EdgePopupModule(spec), data)
    assert trainer.global_step == 0
    trainer.fit(ln.EdgePopupModule(spec, {"optimizer": "adam"}), data)
    assert trainer.global_step == 2


def test_adam_on_float16_parameters_is_refused_before_training(tmp_path, data_dir):
    """Adam under ``16-true``: float16 rounds its second moment (and eps) to 0 for gradients
    below ~5e-3, so its first step made the scores inf or NaN (a run then stopped as diverged,
    telling to lower the lr); refused in one line before any step. SGD trains in float16."""
    data = ln.TensorDataModule("mnist", str(data_dir), limit_train=128, val_size=64)
    spec = {"name": "fc2", "structure": "dense", "sparsity": 0.5, "width": 64}
    trainer = pl.Trainer(max_epochs=1, precision="16-true", logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path)
    module = ln.EdgePopupModule(spec, {"optimizer": "adam"})
    with pytest.raises(ValueError, match=r"^optimizer 'adam' with float16 parameters \(precision "
                                         r"'16-true', or a model made \.half\(\)\): in float16 "
                                         r"adam's second moment .* inf or NaN; give "
                                         r"optim\['optimizer'\] 'sgd', or precision 'bf16-true', "
                                         r"'bf16-mixed' or '32-true'$"):
        trainer.fit(module, data)
    assert trainer.global_step == 0
    assert all(torch.isfinite(p).all() for p in module.parameters())
    module = ln.EdgePopupModule(spec)
    trainer.fit(module, data)
    assert trainer.global_step == 2
    assert all(p.dtype == torch.float16 and torch.isfinite(p).all() for p in module.parameters())


def test_a_cosine_schedule_shorter_than_the_trainer_is_refused(tmp_path, data_dir):
    """optim['epochs'] 1 under max_epochs 3, or a run of max_epochs 1 resumed with
    max_epochs 2 (its restored schedule keeps its length), trained on silently past the
    schedule's end, where CosineAnnealingLR's rate rises again (lr 0 in the second epoch,
    the full lr in the third)."""
    data = ln.TensorDataModule("mnist", str(data_dir), limit_train=64, val_size=0)
    options = dict(logger=False, enable_progress_bar=False, enable_model_summary=False,
                   default_root_dir=tmp_path)
    spec = {"name": "fc2", "structure": "dense", "width": 4}
    with pytest.raises(ValueError, match=re.escape(
            "the cosine schedule spans 1 epochs, the Trainer's max_epochs is 3: past its end "
            "the rate would rise again; give optim['epochs'] >= max_epochs")):
        pl.Trainer(max_epochs=3, enable_checkpointing=False, **options).fit(
            ln.EdgePopupModule(spec, {"epochs": 1}), data)
    pl.Trainer(max_epochs=1, callbacks=[pl.callbacks.ModelCheckpoint(tmp_path, save_last=True)],
               **options).fit(ln.EdgePopupModule(spec), data)
    with pytest.raises(ValueError, match="spans 1 epochs, the Trainer's max_epochs is 2"):
        pl.Trainer(max_epochs=2, enable_checkpointing=False, **options).fit(
            ln.EdgePopupModule(spec), data, ckpt_path=tmp_path / "last.ckpt")
    pl.Trainer(max_epochs=2, enable_checkpointing=False, **options).fit(  # (constant: any)
        ln.EdgePopupModule(spec, {"scheduler": "constant"}), data)


@pytest.mark.parametrize("augment", ["none", "crop-flip"])
def test_own_trainer_resumed_mid_epoch_trains_on_the_batches_left(tmp_path, data_dir, augment):
    """A checkpoint saved part way through an epoch (``ModelCheckpoint(every_n_train_steps=3)``,
    5 batches an epoch) resumes with the epoch's next batch: the resumed fit sees exactly the
    batches (augmented alike) the uninterrupted one saw after it — it replayed the epoch's first
    batches, the training loader being stateless — and ends bit for bit where that one does."""
    spec = {"name": "fc2", "structure": "dense", "sparsity": 0.5}

    class Batches(pl.Callback):
        def __init__(self):
            self.seen = []

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            self.seen.append((trainer.current_epoch, batch_idx, *batch))

    def fit(ckpt_path=None, callbacks=()):
        module = ln.EdgePopupModule(spec, {"lr": 0.05})
        data = ln.TensorDataModule("mnist", str(data_dir), limit_train=320, val_size=0,
                                   augment=augment)
        batches = Batches()
        pl.Trainer(max_epochs=2, logger=False, enable_progress_bar=False,
                   enable_model_summary=False, default_root_dir=tmp_path,
                   enable_checkpointing=bool(callbacks), callbacks=[batches, *callbacks]
                   ).fit(module, data, ckpt_path=ckpt_path)
        return module.model.state_dict(), batches.seen

    saving = pl.callbacks.ModelCheckpoint(tmp_path / "ck", every_n_train_steps=3, save_top_k=-1)
    straight, seen = fit(callbacks=[saving])
    assert [(epoch, idx) for epoch, idx, *_ in seen] == [(e, i) for e in (0, 1) for i in range(5)]
    for name, done in (("epoch=0-step=3.ckpt", 3), ("epoch=1-step=6.ckpt", 6)):
        resumed, seen_resumed = fit(tmp_path / "ck" / name)
        assert [(e, i) for e, i, *_ in seen_resumed] == [(e, i) for e, i, *_ in seen[done:]]
        assert all(torch.equal(a, b) for ours, theirs in zip(seen_resumed, seen[done:])
                   for a, b in zip(ours[2:], theirs[2:]))
        assert all(torch.equal(resumed[k], v) for k, v in straight.items()), name


def test_cuda_graphs_stay_off_under_several_processes_on_a_resume_within_an_epoch(
        tmp_path, data_dir, monkeypatch):
    """Graphs capture one device's steps: a fit in several processes runs eagerly. That was set
    at each epoch's start, which a resume within an epoch skips for its first, so the module's
    own ``cuda_graphs=True`` stood for the rest of that epoch (DDP's steps captured). Now the
    fit sets it as it starts (a world of 2 imitated: the flag is read, nothing runs on CUDA)."""
    enabled = []

    class Reads(pl.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            enabled.append(module.graphs.enabled)

    def fit(ckpt_path=None, callbacks=()):
        module = ln.EdgePopupModule({"name": "fc2", "structure": "dense", "sparsity": 0.5},
                                    {"lr": 0.05}, cuda_graphs=True)
        data = ln.TensorDataModule("mnist", str(data_dir), limit_train=256, val_size=0)
        pl.Trainer(max_epochs=1, logger=False, enable_progress_bar=False,
                   enable_model_summary=False, default_root_dir=tmp_path, callbacks=[
                       Reads(), *callbacks]).fit(module, data, ckpt_path=ckpt_path)

    fit(callbacks=[pl.callbacks.ModelCheckpoint(tmp_path / "ck", every_n_train_steps=1,
                                                save_top_k=-1)])
    assert enabled == [True] * 4  # (one process: on)
    enabled.clear()
    monkeypatch.setattr(pl.Trainer, "world_size", property(lambda trainer: 2))
    fit(tmp_path / "ck" / "epoch=0-step=1.ckpt")
    assert enabled and not any(enabled)


def test_a_runs_epoch_timer_resumes_within_an_epoch(tmp_path):
    """``train.py --resume`` of a checkpoint saved part way through an epoch (a trainer
    option's ``ModelCheckpoint(every_n_train_steps=...)``) failed at that epoch's end with
    ``AttributeError: 'EpochTimer' object has no attribute '_start'``: Lightning starts no
    epoch on such a resume, and the timer's clock started only with one. Now the epoch's
    seconds follow the checkpoint's epochs'."""
    from lotterynet.run_callbacks import EpochTimer

    fit_tiny(tmp_path, 2, callbacks=[EpochTimer(), pl.callbacks.ModelCheckpoint(
        tmp_path, every_n_train_steps=1, save_top_k=-1)])
    path = tmp_path / "epoch=1-step=3.ckpt"  # (the second epoch's first of 2 batches)
    saved = torch.load(path, weights_only=True)["callbacks"]["EpochTimer"]["seconds"]
    timer = EpochTimer()
    fit_tiny(tmp_path, 2, path, callbacks=[timer], enable_checkpointing=False)
    assert len(saved) == 1 and timer.seconds[:1] == saved and len(timer.seconds) == 2


def test_a_resume_within_an_epoch_counts_the_seconds_its_epoch_trained_before_and_after(
        tmp_path, monkeypatch):
    """A run resumed from a checkpoint saved at an epoch's last batch (``every_n_train_steps``)
    had a ``seconds_per_epoch`` entry fewer than its epochs done: the checkpoint predates the
    epoch's end, where the timer counts it, and the resume starts the next epoch. One resumed
    part way through an epoch counted only the part trained after the resume. Now the
    checkpoint keeps the seconds of its epoch under way: each epoch has its whole seconds (a
    clock of the optimizer steps taken: 2 an epoch)."""
    from lotterynet import run_callbacks
    from lotterynet.run_callbacks import EpochTimer

    class Steps(pl.Callback):
        def setup(self, trainer, pl_module, stage):
            monkeypatch.setattr(run_callbacks, "device_clock",
                                lambda device: float(trainer.global_step))

    def fit(ckpt_path=None, callbacks=()):
        timer = EpochTimer()
        fit_tiny(tmp_path, 2, ckpt_path, callbacks=[Steps(), timer, *callbacks],
                 enable_checkpointing=bool(callbacks))
        return timer.seconds

    assert fit(callbacks=[pl.callbacks.ModelCheckpoint(tmp_path, every_n_train_steps=1,
                                                       save_top_k=-1)]) == [2.0, 2.0]
    # (the first epoch's last of 2 batches, the second epoch's first)
    for name in "epoch=0-step=2.ckpt", "epoch=1-step=3.ckpt":
        assert fit(tmp_path / name) == [2.0, 2.0], name


def test_a_resume_within_an_epoch_keeps_the_history_of_the_steps_its_checkpoint_trained(
        tmp_path):
    """``train.py --resume`` of a checkpoint saved part way through an epoch
    (``every_n_train_steps``) kept the rows that its epoch logged after it (those of the
    checkpoint's epoch index and below), and the resume logged them again: metrics.csv held
    them twice. Now the history keeps the rows of the steps the checkpoint trained, and the
    resumed run's rows (epoch, step, columns, ``lr``) are an uninterrupted run's. One saved at
    an epoch's last batch lost the next epoch's ``lr`` row: Lightning started that epoch as one
    restarted part way, without its ``on_train_epoch_start`` hooks (LearningRateMonitor's)."""
    from lotterynet.loggers import HistoryCSVLogger, resumed_history

    x, y = torch.randn(12, 1, 28, 28), torch.randint(0, 10, (12,))

    def fit(run, ckpt_path=None):
        history = resumed_history((ckpt_path, torch.load(ckpt_path, weights_only=True))
                                  if ckpt_path else None)
        saves = pl.callbacks.ModelCheckpoint(run / "checkpoints", every_n_train_steps=1,
                                             save_top_k=-1)
        pl.Trainer(max_epochs=2, logger=HistoryCSVLogger(run, history), log_every_n_steps=1,
                   enable_progress_bar=False, enable_model_summary=False,
                   callbacks=[saves, pl.callbacks.LearningRateMonitor()]).fit(
            ln.EdgePopupModule({"name": "fc2", "width": 4, "structure": "dense"}, {"epochs": 2}),
            torch.utils.data.DataLoader(list(zip(x, y)), batch_size=4), ckpt_path=ckpt_path)
        with open(run / "metrics.csv", newline="") as f:
            return [(row["epoch"], row["step"], row["lr"], sorted(k for k, v in row.items() if v))
                    for row in csv.DictReader(f)]

    straight = fit(tmp_path / "straight")
    assert [(epoch, step) for epoch, step, *_ in straight] == [
        ("", "0"), ("0", "0"), ("0", "1"), ("0", "2"), ("0", "2"),
        ("", "3"), ("1", "3"), ("1", "4"), ("1", "5"), ("1", "5")]
    assert [lr for _, _, lr, _ in straight if lr] == ["0.1", "0.05"]  # (cosine over 2 epochs)
    # (the first epoch's last of 3 batches, the second epoch's first, and its second)
    for name in "epoch=0-step=3.ckpt", "epoch=1-step=4.ckpt", "epoch=1-step=5.ckpt":
        assert fit(tmp_path / name, tmp_path / "straight" / "checkpoints" / name) == straight


@pytest.mark.parametrize("precision", ["32-true", "64-true", "bf16-true"])
def test_frozen_convs_run_once_per_example_with_the_same_numbers(tmp_path, data_dir,
                                                                 monkeypatch, precision):
    """LeNet5's frozen convolutions run once per example of each split (the data module serves
    their output, in the run's precision), not once per batch and epoch; the run ends bit for
    bit where the per-batch path does (scores, momentum, metrics)."""
    seen = []
    conv = nn.Conv2d.forward

    def counting(self, x):
        if x.shape[1] == 1:  # the first convolution
            seen.append(len(x))
        return conv(self, x)

    monkeypatch.setattr(nn.Conv2d, "forward", counting)

    def train(name: str):
        seen.clear()
        data = ln.TensorDataModule("mnist", str(data_dir), limit_train=640, val_size=200)
        module = ln.EdgePopupModule({"name": "lenet5", "structure": "subsetsum", "seed": 3,
                                     "activation": "identity", "sparsity": 0.5}, {"lr": 0.05})
        trainer = pl.Trainer(max_epochs=2, logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False,
                             num_sanity_val_steps=0, precision=precision,
                             default_root_dir=tmp_path / name)
        trainer.fit(module, datamodule=data)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        metrics.update(trainer.test(module, datamodule=data, verbose=False)[0])
        state = trainer.optimizers[0].state_dict()["state"]
        return sum(seen), metrics, module.model.state_dict(), state

    examples, metrics, weights, momentum = train("cached")
    assert examples == 640 + 200 + 10_000  # each example once, over two epochs
    monkeypatch.setattr(ln.module, "frozen_prefix", lambda model: None)  # the per-batch path
    per_batch, *reference = train("per-batch")
    assert per_batch == 2 * (640 + 200) + 10_000
    assert metrics == reference[0]
    assert all(torch.equal(weights[k], v) for k, v in reference[1].items())
    assert all(torch.equal(momentum[i]["momentum_buffer"], s["momentum_buffer"])
               for i, s in reference[2].items())


def test_a_subclass_with_a_step_of_its_own_gets_the_images(tmp_path, data_dir):
    """A subclass whose ``training_step`` calls ``self(x)`` trains LeNet5 on the data module:
    its steps get the images, not the frozen convolutions' output that the module's own steps
    take (the whole model ran on that: "Expected 3D (unbatched) or 4D (batched) input to
    conv2d, but got input of size: [64, 400]")."""
    class Mine(ln.EdgePopupModule):
        def training_step(self, batch, batch_idx):
            x, y = batch
            self.shapes.add(tuple(x.shape[1:]))
            return nn.functional.cross_entropy(self(x), y)

    module = Mine({"name": "lenet5", "sparsity": 0.5}, {"epochs": 1})
    module.shapes = set()
    data = ln.TensorDataModule("mnist", str(data_dir), limit_train=256, val_size=64)
    pl.Trainer(max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
               enable_model_summary=False, default_root_dir=tmp_path).fit(module, data)
    assert module.shapes == {(1, 28, 28)}


def test_a_subclass_with_a_forward_of_its_own_trains_through_it(tmp_path, data_dir):
    """A subclass's ``forward`` computes the logits of the training steps too, as of the
    evaluation steps: the training steps ran ``self.model`` past it. Here it gives all-zero
    logits: a loss of ln 10 and every prediction class 0."""
    class Mine(ln.EdgePopupModule):
        def forward(self, x):
            return self.model(x) * 0

    module = Mine({"name": "fc2", "structure": "dense", "sparsity": 0.5, "width": 64})
    data = ln.TensorDataModule("mnist", str(data_dir), limit_train=256, val_size=64)
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path)
    trainer.fit(module, data)
    labels = data.splits["train"][1]
    assert float(trainer.callback_metrics["train/loss_epoch"]) == pytest.approx(math.log(10))
    assert float(trainer.callback_metrics["train/acc"]) == float((labels == 0).double().mean())


def test_data_module_serves_images_again_once_the_trainer_is_done(tmp_path, data_dir):
    """During fit and test the data module serves LeNet5's frozen-conv features; afterwards
    its loaders give the images again, which the model takes: evaluating by hand reproduces
    the Trainer's test accuracy."""
    data = ln.TensorDataModule("mnist", str(data_dir), limit_train=256, val_size=128)
    module = ln.EdgePopupModule({"name": "lenet5", "structure": "dense", "sparsity": 0.5})
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path)
    trainer.fit(module, datamodule=data)
    assert next(iter(data.val_dataloader()))[0].shape[1:] == (1, 28, 28)
    tested = trainer.test(module, datamodule=data, verbose=False)[0]["test/acc"]
    module.eval()
    with torch.no_grad():
        hits = sum(int((module(x).argmax(1) == y).sum()) for x, y in data.test_dataloader())
    assert hits / 10_000 == pytest.approx(tested, abs=1e-6)


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
def test_step_metrics_read_nothing_back_from_the_device():
    """A step's metric updates queue device work and never wait for it: on the meta device,
    where any read of a tensor's value raises, the train and val steps run through. (On a GPU
    torchmetrics' input checks and NaN filter, and a Python-int weight, each cost a sync.)"""
    module = ln.EdgePopupModule({"name": "fc2", "structure": "dense", "sparsity": 0.5})
    module.model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))  # the metrics, not masks
    module.to("meta")
    x = torch.empty(8, 1, 28, 28, device="meta")
    y = torch.empty(8, dtype=torch.long, device="meta")
    for stage in ("train", "val"):
        assert module._step((x, y), stage).device.type == "meta"


NESTED = {
    "model": {"arch": "fc2", "structure": "dense", "sparsity": 0.5},
    "data": {"limit_train": 256, "val_size": 128},
    "trainer": {"max_epochs": 2, "gradient_clip_val": 0.5, "accumulate_grad_batches": 2,
                "devices": "auto", "enable_progress_bar": False, "enable_model_summary": True,
                "callbacks": [{"class_path": "lightning.pytorch.callbacks.EarlyStopping",
                               "init_args": {"monitor": "val/acc", "mode": "max"}}],
                "logger": {"class_path": "CSVLogger", "init_args": {"name": "extra"}}},
}


def nested_config(tmp_path, *flags):
    path = tmp_path / "nested.yaml"
    path.write_text(yaml.safe_dump(NESTED))
    return config_from_args(build_parser().parse_args(["--config", str(path), *flags]))


def test_trainer_section_of_a_config_file_reaches_the_trainer(tmp_path):
    from pytorch_lightning.callbacks import EarlyStopping
    from pytorch_lightning.loggers import CSVLogger

    from lotterynet.run import make_trainer
    from lotterynet.run_callbacks import EpochTimer

    config = nested_config(tmp_path, "--trainer.accumulate_grad_batches", "4")
    assert (config.arch, config.epochs, config.limit_train, config.progress_bar) == (
        "fc2", 2, 256, False)
    trainer = make_trainer(config, tmp_path / "run", [], EpochTimer())
    assert trainer.gradient_clip_val == 0.5
    assert trainer.accumulate_grad_batches == 4  # the flag over the file
    assert trainer.max_epochs == 2
    stops = [c for c in trainer.callbacks if isinstance(c, EarlyStopping)]
    assert len(stops) == 1 and stops[0].monitor == "val/acc"
    extra = [lg for lg in trainer.loggers if isinstance(lg, CSVLogger)]
    assert extra and Path(extra[0].save_dir) == tmp_path / "run"



@pytest.mark.skipif(torch.cuda.is_available(), reason="auto is CUDA here")
def test_auto_accelerator_without_cuda_is_the_cpu_where_lightning_would_take_mps(
        tmp_path, monkeypatch):
    """``--accelerator auto`` is CUDA when present, else the CPU, as its help and the checks of
    memory and precision read it: on a Mac Lightning's own ``auto`` took MPS, where the exact
    accuracies' float64 has no kernel. (Lightning told here that MPS is available.)"""
    from lightning_fabric.accelerators.mps import MPSAccelerator

    from lotterynet.run import make_trainer
    from lotterynet.run_callbacks import EpochTimer

    monkeypatch.setattr(MPSAccelerator, "is_available", staticmethod(lambda: True))
    trainer = make_trainer(nested_config(tmp_path), tmp_path / "run", [], EpochTimer())
    assert trainer.strategy.root_device == torch.device("cpu")


def test_a_slurm_batch_job_launches_the_ranks_of_its_devices(tmp_path, monkeypatch):
    """In a SLURM batch job Lightning's SLURMEnvironment took a run's ranks for ``srun``'s
    tasks: ``--devices 2`` in a one-task job trained on one device ("Starting with 1
    processes", ``"devices": 1`` in its results) without a word. The run launches its two
    ranks there as anywhere."""
    from pytorch_lightning.strategies.launchers import _SubprocessScriptLauncher

    from lotterynet.run import make_trainer
    from lotterynet.run_callbacks import EpochTimer

    for name, value in SLURM_BATCH_JOB.items():
        monkeypatch.setenv(name, value)
    config = nested_config(tmp_path, "--devices", "2")
    trainer = make_trainer(config, tmp_path / "run", [], EpochTimer())
    assert (trainer.world_size, trainer.num_devices) == (2, 2)
    assert isinstance(trainer.strategy.launcher, _SubprocessScriptLauncher)


def test_dotted_true_or_false_keys_take_a_value_as_in_lightning(capsys):
    """``--model.shared false`` (LightningCLI's spelling, also ``=false``) is ``--no-shared``:
    it was refused as an unrecognized argument ``false``."""
    from lotterynet.cli import build_parser, config_from_args, main

    def resolve(*flags):
        return config_from_args(build_parser().parse_args(["--structure", "subsetsum", *flags]))

    assert not resolve("--model.shared", "false").shared
    assert not resolve("--model.shared=false", "--epochs", "3").shared
    assert resolve("--model.shared", "true", "--model.subnet_convs=yes").subnet_convs
    assert resolve("--model.shared", "--epochs", "3").shared  # bare: true
    assert main(["--model.shared", "maybe"]) == 2
    assert capsys.readouterr().err.strip() == (
        "train.py: error: --model.shared 'maybe': shared is true or false (--model.shared true "
        "or false, --shared or --no-shared)")


def test_dotted_flags_in_lightnings_spelling(tmp_path, capsys):
    """On the command line as in the file: ``--trainer.max_epochs`` (and the other Trainer
    options a flat key covers) read as that key, ``--data.batch_size`` with Lightning's
    underscore; an unknown section key, or a Trainer option that disagrees with its flat flag,
    refused in one line."""
    from lotterynet.cli import main

    config = nested_config(tmp_path, "--trainer.max_epochs=7", "--trainer.accelerator", "cpu",
                           "--trainer.enable_progress_bar", "true", "--data.batch_size", "32",
                           "--model.weight-decay=0.001")
    assert (config.epochs, config.accelerator, config.progress_bar) == (7, "cpu", True)
    assert (config.batch_size, config.weight_decay) == (32, 0.001)
    assert "max_epochs" not in config.trainer and config.trainer["gradient_clip_val"] == 0.5
    assert main(["--data.batch_szie", "32"]) == 2
    assert capsys.readouterr().err.strip() == (
        "train.py: error: unknown data key 'batch_szie' in '--data.batch_szie'; valid keys: "
        "dataset, data_dir, download, val_size, limit_train, augment, batch_size")
    assert main(["--trainer.max_epochs", "4", "--epochs", "5"]) == 2
    assert capsys.readouterr().err.strip() == (
        "train.py: error: --trainer.max_epochs 4 and --epochs 5 disagree; give one of them")


def test_print_config_reads_back_as_the_same_config(tmp_path, capsys):
    from lotterynet.cli import main

    path = tmp_path / "nested.yaml"
    path.write_text(yaml.safe_dump(NESTED))
    assert main(["--config", str(path), "--print-config", "--trainer.gradient_clip_val=0.25"]) == 0
    printed = tmp_path / "printed.yaml"
    printed.write_text(capsys.readouterr().out)
    assert set(yaml.safe_load(printed.read_text())) >= {"model", "data", "trainer"}
    again = config_from_args(build_parser().parse_args(["--config", str(printed)]))
    assert again == nested_config(tmp_path, "--trainer.gradient_clip_val=0.25")
    assert again.trainer["gradient_clip_val"] == 0.25


def test_trainer_options_train_a_run_end_to_end(tmp_path, data_dir):
    from lotterynet.cli import main

    out = tmp_path / "run"
    assert main(["--arch", "fc2", "--structure", "dense", "--limit-train", "256",
                 "--val-size", "128", "--epochs", "2", "--no-progress-bar",
                 "--data-dir", str(data_dir), "--out", str(out),
                 "--trainer.gradient_clip_val", "1.0", "--trainer.accumulate_grad_batches=2",
                 "--trainer.limit_test_batches=1",
                 "--trainer.callbacks", "{class_path: EarlyStopping, init_args: "
                 "{monitor: val/acc, mode: max}}"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["trainer"]["gradient_clip_val"] == 1.0
    assert results["finished"] and results["epochs_done"] == 2
    # 4 batches = 2 optimizer steps per epoch: the step metrics are logged in every epoch, and
    # the learning rate (scheduled per epoch) once per epoch
    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["epoch"] for r in rows if r["train/loss"]} == {"0", "1"}
    lr_steps = [r["step"] for r in rows if r["lr"]]
    assert len(lr_steps) == len(set(lr_steps)) == 2


def test_step_metrics_reach_every_epoch_under_a_train_batch_limit(tmp_path, data_dir):
    """32 batches an epoch cut to 3 by ``limit_train_batches``: the step metrics are logged in
    each epoch (at most every 3 optimizer steps), not only once 32 steps have passed."""
    from lotterynet.cli import main

    out = tmp_path / "run"
    assert main(["--arch", "fc2", "--structure", "dense", "--limit-train", "2000",
                 "--val-size", "128", "--epochs", "2", "--no-progress-bar",
                 "--data-dir", str(data_dir), "--out", str(out),
                 "--trainer.limit_train_batches=3", "--trainer.limit_test_batches=1"]) == 0
    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["epoch"] for r in rows if r["train/loss"]} == {"0", "1"}


def test_step_loss_is_logged_only_in_the_steps_whose_logs_lightning_writes(tmp_path, data_dir):
    """``self.log`` costs ~1 ms of host time a call, half a graphed LeNet5 step on a GPU: the
    step loss is logged in the steps Lightning writes (every ``log_every_n_steps``-th), and the
    loggers receive every one of them, as when it was logged in every step."""
    from pytorch_lightning.loggers import CSVLogger

    data = ln.TensorDataModule("mnist", str(data_dir), limit_train=640, val_size=64)
    module = ln.EdgePopupModule({"name": "fc2", "structure": "dense", "sparsity": 0.5})
    logged, log = [], module.log
    module.log = lambda name, *args, **kwargs: (logged.append(name), log(name, *args, **kwargs))
    trainer = pl.Trainer(max_epochs=2, log_every_n_steps=4, logger=CSVLogger(tmp_path),
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(module, datamodule=data)  # 10 steps an epoch
    with open(Path(trainer.logger.log_dir) / "metrics.csv", newline="") as f:
        losses = {int(r["step"]): float(r["train/loss"]) for r in csv.DictReader(f)
                  if r["train/loss"]}
    assert sorted(losses) == [3, 7, 11, 15, 19]  # Lightning writes steps 4, 8, ... (1-based)
    assert logged.count("train/loss") == 5 and len(set(losses.values())) == 5


def test_a_callback_monitoring_the_step_loss_reads_the_last_steps(tmp_path, data_dir):
    """``ModelCheckpoint(monitor='train/loss')`` compares each epoch's last step loss, as with
    any module that logs it in every step: it read the last step whose logs Lightning writes
    (here step 6 of 8), and in an epoch shorter than ``log_every_n_steps`` found none."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    class Losses(pl.Callback):
        def __init__(self):
            self.losses = []

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            self.losses.append(float(outputs["loss"]))

    data = ln.TensorDataModule("mnist", str(data_dir), limit_train=512, val_size=0)
    losses = Losses()
    best = ModelCheckpoint(tmp_path, monitor="train/loss", save_top_k=1)
    for every in (3, 50):
        trainer = pl.Trainer(max_epochs=2, log_every_n_steps=every, callbacks=[losses, best],
                             logger=False, enable_progress_bar=False,
                             enable_model_summary=False, default_root_dir=tmp_path)
        losses.losses = []
        trainer.fit(ln.EdgePopupModule({"name": "fc2", "structure": "dense", "sparsity": 0.5,
                                        "width": 64}, {"optimizer": "adam", "lr": 1e-2}), data)
        assert len(losses.losses) == 16  # 8 steps an epoch
        assert float(trainer.callback_metrics["train/loss"]) == losses.losses[15]
        assert float(best.best_model_score) == min(losses.losses[7], losses.losses[15])


def test_devices_on_the_command_line_win_over_the_files_in_either_form(tmp_path, monkeypatch):
    """A config file's ``trainer.devices: auto`` (the README's example) outlived ``--devices
    2``, and Lightning read it: the run trained on one device (its config said 2); a resume
    with ``--devices`` likewise kept the stored ``trainer.devices``."""
    from lotterynet.config import make_config
    from lotterynet.config_schema import device_count

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    path = tmp_path / "c.yaml"
    path.write_text("model: {arch: fc2}\ntrainer: {devices: auto}\n")

    def resolved(*argv):
        return config_from_args(build_parser().parse_args(["--accelerator", "gpu", *argv]))

    assert device_count(resolved("--config", str(path))) == 4
    assert device_count(resolved("--config", str(path), "--devices", "2")) == 2
    assert device_count(resolved("--config", str(path), "--trainer.devices", "0,1,2")) == 3
    path.write_text("model: {arch: fc2}\ntrainer: {devices: 3}\n")  # (an int: flat devices)
    assert device_count(resolved("--config", str(path), "--devices", "auto")) == 4
    stored = make_config({"arch": "fc2", "accelerator": "gpu", "trainer": {"devices": "auto"}})
    monkeypatch.setattr("lotterynet.checkpointing.stored_run",
                        lambda path: (stored.to_dict(), 1))
    (tmp_path / "last.ckpt").write_bytes(b"")  # (its config is the stored_run above)
    assert device_count(resolved("--resume", str(tmp_path / "last.ckpt"), "--devices", "2")) == 2


def test_trainer_devices_are_counted_as_lightning_counts_them(monkeypatch):
    """``--devices auto`` / ``0,1`` / ``-1`` go to the Trainer as its ``devices``; the shares of
    the training split, the per-device checks and the strategy count the devices they name
    (here four GPUs, simulated), not one."""
    from lotterynet.config import make_config
    from lotterynet.config_schema import device_count, examples_per_device
    from lotterynet.errors import ConfigError
    from lotterynet.trainer_options import split_batches

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    base = dict(arch="fc2", structure="dense", accelerator="gpu", limit_train=1000,
                val_size=640)
    for devices, count in (("auto", 4), ("-1", 4), ("0,1", 2), ("1,2,3", 3), ([0, 3], 2),
                           (2, 2)):
        where = {"devices": devices} if type(devices) is int else \
            {"trainer": {"devices": devices}}  # (the command line moves them there)
        config = make_config({**base, **where})
        assert device_count(config) == count, devices
        assert examples_per_device(config) == 1000 // count
        assert split_batches(config)["val"] == math.ceil(math.ceil(640 / count) / EVAL_BATCH)
    cpu = make_config({**base, "accelerator": "cpu", "trainer": {"devices": "auto"}})
    assert device_count(cpu) == 1 and examples_per_device(cpu) == 1000
    with pytest.raises(ConfigError, match="leaves some of the 4 devices no training example"):
        make_config({**base, "trainer": {"devices": "auto"}, "limit_train": 3})


def test_the_checked_checkpoint_io_wrapped_in_async_io_reads_the_file_once(tmp_path, monkeypatch):
    """Wrapped by Lightning's ``AsyncCheckpointIO``, the checked IO's load was not seen by the
    module, which read and checked the ``ckpt_path`` a second time."""
    from pytorch_lightning.plugins.io import AsyncCheckpointIO

    fit_tiny(tmp_path, 1, callbacks=[pl.callbacks.ModelCheckpoint(tmp_path, save_last=True)])
    path, reads, read_bytes = tmp_path / "last.ckpt", [], Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: reads.append(self) or read_bytes(self))
    fit_tiny(tmp_path, 2, path, plugins=[AsyncCheckpointIO(ln.CheckedCheckpointIO())],
             enable_checkpointing=False)
    assert reads.count(path) == 1


def test_load_from_checkpoint_honours_weights_only_false(tmp_path):
    """``EdgePopupModule.load_from_checkpoint(path, weights_only=False)`` of a checkpoint whose
    callback kept a Python object was refused as with ``weights_only=True``: it loads, and
    without it the file is still refused in one line."""
    fit_tiny(tmp_path, 1, callbacks=[KeepsAPythonObject(),
                                     pl.callbacks.ModelCheckpoint(tmp_path, save_last=True)])
    path = tmp_path / "last.ckpt"
    with pytest.raises(CheckpointError, match="holds Python objects that a weights-only"):
        ln.EdgePopupModule.load_from_checkpoint(path)
    model = ln.EdgePopupModule.load_from_checkpoint(path, weights_only=False)
    assert model.hparams.spec["width"] == 4


def test_the_data_modules_evaluation_batch_is_the_users_to_set(data_dir):
    """Validation, test and prediction came in batches of 1,000 whatever the user set
    (``EVAL_BATCH``): a large model's memory at evaluation was not the user's to bound."""
    data = ln.TensorDataModule("mnist", str(data_dir), val_size=500, eval_batch_size=300)
    data.setup()
    assert [len(x) for x, _ in data.val_dataloader()] == [300, 200]
    assert [len(x) for x, _ in data.test_dataloader()] == [300] * 33 + [100]
    with pytest.raises(ValueError, match=r"^eval_batch_size must be a positive integer, got 0$"):
        ln.TensorDataModule("mnist", str(data_dir), eval_batch_size=0)
