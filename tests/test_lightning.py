"""lotterynet the way a Lightning user takes it: the LightningModule and the DataModule alone
under a plain ``pl.Trainer``, the Trainer's own options from a config file, and the defaults
that one architecture family or the other gets."""

import pytorch_lightning as pl
import torch
from torch import nn

import lotterynet as ln
from lotterynet.cli import build_parser, config_from_args
from lotterynet.datamodule import TensorDataModule
from lotterynet.models import build_model
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


def test_module_and_datamodule_train_under_a_plain_trainer(tmp_path, data_dir):
    data = ln.TensorDataModule("mnist", str(data_dir), limit_train=512, val_size=256)
    assert not data.splits  # nothing is read before Lightning's hooks
    module = ln.EdgePopupModule({"name": "fc2", "structure": "dense", "sparsity": 0.5},
                                {"optimizer": "adam", "lr": 1e-2})
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path)
    trainer.fit(module, datamodule=data)
    assert type(trainer.optimizers[0]) is torch.optim.Adam
    assert trainer.lr_scheduler_configs[0].scheduler.T_max == 1  # the Trainer's max_epochs
    tested = trainer.test(module, datamodule=data, verbose=False)[0]
    assert tested["test/acc"] > 0.5
