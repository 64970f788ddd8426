"""``torch.compile`` on subnet models: the whole training step is one graph (``fullgraph=True``
fails on any graph break) and trains exactly as the eager model does."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lotterynet as ln
from lotterynet.masking import masked_weights
from lotterynet.models import build_model


def converted_convnet() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.Conv2d(8, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(8, 10))
    return ln.convert(net, sparsity=0.5, seed=1)


def lenet5_subsetsum() -> nn.Module:
    return build_model("lenet5", structure="subsetsum", activation="relu", sparsity=0.5, seed=2)


@pytest.mark.parametrize("make,shape", [(converted_convnet, (8, 1, 12, 12)),
                                        (lenet5_subsetsum, (8, 1, 28, 28))],
                         ids=["converted-convnet", "lenet5-subsetsum"])
def test_compiled_training_is_one_graph_and_matches_eager(make, shape):
    torch._dynamo.reset()
    gen = torch.Generator().manual_seed(3)
    x, y = torch.randn(shape, generator=gen), torch.randint(0, 10, (shape[0],), generator=gen)
    losses, masks = [], []
    for compiled in (False, True):
        model = make()
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5,
                              momentum=0.9)
        forward = torch.compile(model, backend="aot_eager", fullgraph=True) if compiled \
            else model
        run = []
        for _ in range(3):  # the masks change between steps: the graph re-ranks them
            loss = F.cross_entropy(forward(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad()
            run.append(float(loss.detach()))
        losses.append(run)
        masks.append([m.mask().clone() for m in masked_weights(model)])
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(*masks))
    first = make()
    assert any(not torch.equal(a, b.mask()) for a, b in zip(masks[1], masked_weights(first)))


def test_a_thawed_frozen_weight_is_refused_under_fullgraph_naming_it():
    """A training forward with a frozen random weight thawed along with the scores
    (``model.requires_grad_(True)``, its frozen bias too) is refused in eager; compiled with
    ``fullgraph=True`` the refusal failed to trace ("Dynamo does not know how to trace builtin
    operator `is_` with argument types ['tuple', 'tuple']"), and the error named neither layer
    nor weight. Dynamo now traces it to the refusal, whose line its error carries."""
    torch._dynamo.reset()
    model = nn.Sequential(ln.SubnetLinear(4, 3, bias=True, seed=0)).requires_grad_(True)
    with pytest.raises(torch._dynamo.exc.Unsupported,
                       match=r"SubnetLinear\(in_features=4, out_features=3, bias='frozen', "
                             r"structure='dense', density=0\.5\): its frozen random weight "
                             r"'structure\.weight\.weight' requires grad, as do its scores"):
        torch.compile(model, backend="eager", fullgraph=True)(torch.randn(2, 4))
