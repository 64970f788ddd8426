"""CUDA graphs for training steps (lotterynet.cuda_graphs): a graphed step computes what the eager
step computes, recaptures what changed, and is used only where it may be."""

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

import lotterynet as ln
from conftest import requires_cuda
from lotterynet.cli import build_parser, config_from_args
from lotterynet.config import NOT_COMPUTED, changed_fields, make_config
from lotterynet.cuda_graphs import StepGraphs
from lotterynet.masking import masked_weights
from lotterynet.models import build_model
from lotterynet.optim import OPTIMIZERS, trainable_parameters
from lotterynet.run import build_module
from lotterynet.stack_model import StackedModel
from lotterynet.stack_module import StackModule


def lenet_fc(sparsity=0.5):
    """LeNet5's layers after its frozen convs (what a step runs on encoded batches)."""
    return build_model("lenet5", structure="subsetsum", activation="identity",
                       sparsity=sparsity, seed=0)[7:]


def train(model, graphs, batches, device):
    optimizer = OPTIMIZERS.get("sgd")(trainable_parameters(model), lr=0.1, momentum=0.9,
                                      weight_decay=5e-4)
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        F.cross_entropy(graphs(model, (model,), x), y).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def batches(sizes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(n, 400, generator=g), torch.randint(0, 10, (n,), generator=g))
            for n in sizes]


def test_cpu_steps_run_eagerly():
    """On the CPU nothing is captured (make_graphed_callables would fail there) and the numbers
    are the eager step's, bit for bit."""
    graphed, eager = lenet_fc(), lenet_fc()
    graphs = StepGraphs()
    train(graphed, graphs, batches([64, 64, 24]), "cpu")
    train(eager, StepGraphs(enabled=False), batches([64, 64, 24]), "cpu")
    assert graphs.captures == 0
    for a, b in zip(graphed.parameters(), eager.parameters()):
        assert torch.equal(a, b)


def test_cuda_graphs_is_a_flag_that_does_not_change_what_a_run_computes(data_dir):
    config = config_from_args(build_parser().parse_args(["--arch", "lenet5",
                                                         "--no-cuda-graphs"]))
    assert config.cuda_graphs is False
    assert make_config({}).cuda_graphs is True
    data = ln.TensorDataModule("mnist", str(data_dir), limit_train=64, val_size=64)
    data.setup()
    assert build_module(config, data).hparams.cuda_graphs is False
    # a sweep's cell (or a resume) run with graphs is the same run without them
    assert "cuda_graphs" in NOT_COMPUTED
    stored = make_config({"arch": "lenet5"}).to_dict()  # graphs on
    assert changed_fields(stored, config.to_dict()) == []
    assert changed_fields({**stored, "seed": 1}, config.to_dict()) == ["seed"]


@requires_cuda
def test_graphed_steps_train_as_eager_steps_do():
    """Full batches and a shorter last one (two graphs), SGD between steps: the same scores
    and masks as eager steps; a changed k is captured anew after clear()."""
    graphed, eager = lenet_fc().cuda(), lenet_fc().cuda()
    graphs = StepGraphs()
    data = batches([64, 64, 64, 24, 64, 24])
    train(graphed, graphs, data, "cuda")
    train(eager, StepGraphs(enabled=False), data, "cuda")
    assert graphs.captures == 2
    for a, b in zip(graphed.parameters(), eager.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    masks = [w.mask() for w in masked_weights(graphed)]
    assert [torch.equal(m, w.mask()) for m, w in
            zip(masks, masked_weights(eager))] == [True] * len(masks)

    for w in masked_weights(graphed):
        w.sparsity = 0.9
    graphs.clear()
    x = torch.randn(64, 400, device="cuda")
    torch.testing.assert_close(graphs(graphed, (graphed,), x), graphed(x))
    assert graphs.captures == 3


@requires_cuda
def test_lightning_run_with_graphs_matches_one_without(tmp_path, data_dir):
    """A LeNet5 epoch on the GPU, its steps graphed (the default) or eager: the same accuracy
    and the same masks; validation and test run eagerly."""
    results = {}
    for graphed in (True, False):
        pl.seed_everything(0)
        data = ln.TensorDataModule("mnist", str(data_dir), limit_train=1000, val_size=200)
        module = ln.EdgePopupModule({"name": "lenet5", "structure": "subsetsum",
                                     "activation": "identity", "sparsity": 0.5},
                                    {"lr": 0.01}, cuda_graphs=graphed)
        trainer = pl.Trainer(max_epochs=2, accelerator="gpu", devices=1, logger=False,
                             enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, default_root_dir=tmp_path)
        trainer.fit(module, datamodule=data)
        tested = trainer.test(module, datamodule=data, verbose=False)[0]
        results[graphed] = (tested["test/acc"], module.graphs.captures,
                            [w.mask().cpu() for w in masked_weights(module.model)])
    (acc, captures, masks), (eager_acc, eager_captures, eager_masks) = results[True], \
        results[False]
    assert captures == 4 and eager_captures == 0  # 1000 examples: 15 of 64 and one of 40
    assert abs(acc - eager_acc) <= 0.002 and acc > 0.5
    changed = sum(int((a != b).sum()) for a, b in zip(masks, eager_masks))
    assert changed <= 1e-4 * sum(m.numel() for m in masks)


@requires_cuda
def test_stack_steps_graphed_match_eager(tmp_path, data_dir):
    """A two-member LeNet5 stack on the GPU with and without graphs: the same test accuracy
    per member."""
    accs = {}
    for graphed in (True, False):
        configs = [dict(arch="lenet5", structure="subsetsum", activation="identity",
                        sparsity=s, epochs=1, limit_train=640, val_size=200,
                        data_dir=str(data_dir), accelerator="gpu", progress_bar=False,
                        cuda_graphs=graphed) for s in (0.5, 0.9)]
        results = ln.run_stack(configs, tmp_path / f"stack-{graphed}")
        accs[graphed] = [r["test_acc"] for r in results]
    assert all(abs(a - b) <= 0.002 for a, b in zip(accs[True], accs[False])), accs
    assert StackModule.__init__.__defaults__ == (True,)  # graphs on unless turned off


@requires_cuda
def test_stack_on_the_gpu_runs_its_members_batched_with_the_same_result():
    """On CUDA a stack runs its members as one (the default): every member's masks from one
    sort per tensor (those its own selection gives) and one vmapped forward; graphed training
    steps then give the scores that eager member-by-member steps give."""
    sparsities = (0.0, 0.5, 0.9, 0.99)

    def stack(batch):
        return StackedModel([lenet_fc(s) for s in sparsities], batched=batch).cuda()

    batched, single = stack(None), stack(False)
    assert batched.unbatchable is None
    masks = batched._row_masks([0, 1, 2, 3])
    assert len(masks) == len(masked_weights(batched.members[0]))
    for position, mask in enumerate(masks):
        for s, m in enumerate(mask):
            w = masked_weights(batched.members[s])[position]
            assert torch.equal(m, w.mask(w.weight.dtype))
    x = torch.randn(32, 400, device="cuda")
    for a, b in zip(batched(x), single(x)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    graphs = StepGraphs()
    optimizers = [OPTIMIZERS.get("sgd")(trainable_parameters(m), lr=0.01, momentum=0.9,
                                        weight_decay=5e-4) for m in (batched, single)]
    for x, y in batches([64] * 5):
        x, y = x.cuda(), y.cuda()
        for model, optimizer, step in zip((batched, single), optimizers,
                                          (graphs, StepGraphs(enabled=False))):
            sum(F.cross_entropy(o, y) for o in step(model, model.members, x)).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    assert graphs.captures == 1 and graphs.failed is None
    for a, b in zip(batched.parameters(), single.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@requires_cuda
def test_a_step_that_cannot_be_captured_runs_eagerly_with_a_warning():
    """A batch norm with a cumulative average reads its step count on the host: no graph can
    hold that step, so it runs eagerly, with the same result, and no capture is tried again."""
    import pytest

    model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.BatchNorm1d(4, momentum=None))
    model.cuda()
    graphs = StepGraphs()
    x = torch.randn(16, 8, device="cuda")
    with pytest.warns(UserWarning, match="CUDA graphs off"):
        out = graphs(model, (model,), x)
    assert graphs.failed and graphs.captures == 0
    out.sum().backward()
    assert graphs(model, (model,), x).shape == (16, 4)  # eager, no second warning


@requires_cuda
def test_graphed_batch_norm_counts_each_batch_once():
    """Capturing runs warm-up forwards; the running statistics they moved are put back, so a
    graphed batch norm's statistics are the eager one's after the same batches."""
    import copy

    torch.manual_seed(0)
    graphed = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.BatchNorm1d(4)).cuda()
    eager = copy.deepcopy(graphed)
    graphs = StepGraphs()
    for _ in range(4):
        x = torch.randn(16, 8, device="cuda")
        graphs(graphed, (graphed,), x).square().sum().backward()
        eager(x).square().sum().backward()
    assert graphs.captures == 1
    assert int(graphed[1].num_batches_tracked) == int(eager[1].num_batches_tracked) == 4
    torch.testing.assert_close(graphed[1].running_var, eager[1].running_var)
    torch.testing.assert_close(graphed[1].running_mean, eager[1].running_mean)


def test_a_copied_module_holds_no_graph_of_the_original():
    """A callback's deepcopy of the module (weight averaging, EMA) or a pickle of it does not
    carry the graphs, which replay the original's memory (and cannot be copied)."""
    import copy
    import pickle
    import threading

    module = ln.EdgePopupModule({"name": "fc2", "structure": "dense", "sparsity": 0.5})
    module.graphs._graphs["a captured shape"] = threading.Lock()  # as uncopyable as a graph
    module.graphs.captures = 1
    for twin in (copy.deepcopy(module), pickle.loads(pickle.dumps(module))):
        assert twin.graphs._graphs == {} and twin.graphs.captures == 1
        assert twin.graphs.enabled
    assert "a captured shape" in module.graphs._graphs
