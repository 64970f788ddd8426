"""Training-batch augmentation (``--augment``): edge-popup's CIFAR-10 random crop of the image
padded by 4 black pixels and horizontal flip, on the device, the same for the same seed, epoch,
rank and batch, new every epoch; validation and test batches untouched."""

import pytest
import pytorch_lightning as pl
import torch

import lotterynet as ln
from lotterynet.augment import AUGMENTATIONS, batch_seed, crop_flip
from lotterynet.datamodule import EpochPermutation, TensorDataModule, TensorLoader
from lotterynet.models import build_model
from lotterynet.stack_model import frozen_prefix


def candidates(x: torch.Tensor, fill: torch.Tensor, padding: int = 4):
    """Every crop-and-flip of ``x`` as torchvision's RandomCrop(padding) and
    RandomHorizontalFlip make it: ``((dy, dx, flipped), images)``."""
    n, c, h, w = x.shape
    padded = fill.expand(n, c, h + 2 * padding, w + 2 * padding).clone()
    padded[..., padding:padding + h, padding:padding + w] = x
    for dy in range(2 * padding + 1):
        for dx in range(2 * padding + 1):
            crop = padded[..., dy:dy + h, dx:dx + w]
            yield (dy, dx, False), crop
            yield (dy, dx, True), crop.flip(-1)


def test_crop_flip_is_a_shifted_copy_padded_with_black_flipped_half_the_time():
    torch.manual_seed(0)
    x = torch.randn(2000, 3, 12, 10)
    fill = torch.tensor([-1.5, 0.25, 7.0]).view(3, 1, 1)  # values the images do not hold
    out = crop_flip(x, 123, fill)
    assert out.shape == x.shape and out.dtype == x.dtype
    found = {}
    for key, images in candidates(x, fill):
        for i in torch.nonzero((images == out).flatten(1).all(1)).flatten().tolist():
            found.setdefault(i, []).append(key)
    assert sorted(found) == list(range(len(x)))  # each image one of its crops, once
    assert all(len(keys) == 1 for keys in found.values())
    keys = [keys[0] for keys in found.values()]
    assert abs(sum(flipped for *_, flipped in keys) - 1000) < 100  # p = 1/2: sd 22
    assert {(dy, dx) for dy, dx, _ in keys} == {(dy, dx) for dy in range(9) for dx in range(9)}
    assert torch.equal(crop_flip(x, 123, fill), out)  # the seed decides
    assert not torch.equal(crop_flip(x, 124, fill), out)


def test_batch_seeds_differ_in_each_of_their_parts():
    seeds = {batch_seed(*key) for key in [(0, 0, 0, 0), (1, 0, 0, 0), (0, 1, 0, 0),
                                          (0, 0, 1, 0), (0, 0, 0, 1)]}
    assert len(seeds) == 5 and all(0 <= s < 2**63 for s in seeds)


def batches(loader: TensorLoader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(loader)


def test_training_batches_are_augmented_by_seed_epoch_and_batch_and_nothing_else(data_dir):
    plain = TensorDataModule("mnist", str(data_dir), limit_train=256, val_size=64, seed=3)
    data = TensorDataModule("mnist", str(data_dir), limit_train=256, val_size=64, seed=3,
                            augment="crop-flip")
    for module in (plain, data):
        module.setup()
    x = data.splits["train"][0]
    black = x.min()  # MNIST's background: a zero pixel, normalised
    assert black == pytest.approx(-0.1307 / 0.3081)
    loader = data.train_dataloader()
    first = batches(loader)
    order = EpochPermutation(len(x), shuffle=True, seed=3)
    for b, (xb, yb) in enumerate(first):
        idx = order.indices()[b * 64:(b + 1) * 64]
        assert torch.equal(yb, data.splits["train"][1][idx])
        assert torch.equal(xb, crop_flip(x[idx], batch_seed(3, 0, 0, b), black))
        assert not torch.equal(xb, x[idx])
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, batches(
        data.train_dataloader()), strict=True))  # the same on a second run
    # another epoch: each example (one of 162 crops and flips) drawn anew
    loader.sampler.set_epoch(1)
    second = batches(loader)
    order1 = EpochPermutation(len(x), shuffle=True, seed=3)
    order1.set_epoch(1)
    assert torch.equal(second[0][0], crop_flip(x[order1.indices()[:64]],
                                               batch_seed(3, 1, 0, 0), black))
    by_example = [dict(zip(o.indices().tolist(), torch.cat([xb for xb, _ in epoch])))
                  for o, epoch in ((order, first), (order1, second))]
    same = sum(torch.equal(by_example[0][i], by_example[1][i]) for i in range(len(x)))
    assert same < 15  # about 256 / 162 by chance
    # validation, test and the plain module's batches are the images themselves
    for split in ("val", "test"):
        loader = getattr(data, f"{split}_dataloader")()
        reference = getattr(plain, f"{split}_dataloader")()
        for (xa, ya), (xb, yb) in zip(loader, reference, strict=True):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
    for (xa, _), b in zip(plain.train_dataloader(), range(4)):
        assert torch.equal(xa, x[EpochPermutation(len(x), shuffle=True, seed=3).indices()[
            b * 64:(b + 1) * 64]])


def test_each_ddp_rank_draws_its_own_augmentations():
    x, y = torch.randn(8, 3, 6, 6), torch.arange(8)
    shares = [TensorLoader(x, y, 2, EpochPermutation(8, shuffle=True, seed=0, rank=r, world=2),
                           crop_flip) for r in (0, 1)]
    for rank, loader in enumerate(shares):
        idx = loader.sampler.indices()[:2]
        assert torch.equal(next(iter(loader))[0], crop_flip(x[idx], batch_seed(0, 0, rank, 0)))


def test_an_unknown_augmentation_is_refused_naming_the_choices():
    with pytest.raises(ValueError, match="augmentation 'mirror'; valid choices: crop-flip, "
                                         "none"):
        TensorDataModule("mnist", augment="mirror")
    assert AUGMENTATIONS.names() == ["crop-flip", "none"]


def test_augmented_batches_run_through_the_frozen_convs_every_step(data_dir):
    """LeNet5's frozen convs run once per example of each split when the inputs are fixed
    (``encode_with``); augmented training batches are new every step, so the data module
    declines to encode and the model runs whole, on the augmented images."""
    model = build_model("lenet5", structure="subsetsum", sparsity=0.5, seed=0)
    plain = TensorDataModule("mnist", str(data_dir), limit_train=128, val_size=64)
    data = TensorDataModule("mnist", str(data_dir), limit_train=128, val_size=64,
                            augment="crop-flip")
    for module in (plain, data):
        module.setup()
    assert plain.encode_with(frozen_prefix(model))
    assert not data.encode_with(frozen_prefix(model)) and data.encoder is None

    seen = []

    class Shapes(pl.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            seen.append(("train", tuple(batch[0].shape[1:])))

        def on_validation_batch_start(self, trainer, module, batch, batch_idx, dataloader_idx=0):
            seen.append(("val", tuple(batch[0].shape[1:])))

    module = ln.EdgePopupModule({"name": "lenet5", "structure": "subsetsum", "sparsity": 0.5},
                                {"lr": 0.01})
    pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
               enable_progress_bar=False, enable_model_summary=False,
               callbacks=[Shapes()]).fit(module, datamodule=data)
    assert {stage for stage, _ in seen} == {"train", "val"}
    assert all(shape == (1, 28, 28) for _, shape in seen)
