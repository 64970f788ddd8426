import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import lotterynet as ln
from lotterynet.convert import convert
from lotterynet.export import export
from lotterynet.plain import MaxPool2x2, SparseConv2d, SparseLinear, SplitSigns, split_signs
from lotterynet.plain import split_signs as structure_split_signs
from lotterynet.timm_models import create_timm_model

STRUCTS = {
    "dense": dict(structure="dense"),
    "relu-shared": dict(structure="subsetsum", activation="relu"),
    "relu-unshared": dict(structure="subsetsum", activation="relu", shared=False),
    "identity-shared": dict(structure="subsetsum", activation="identity"),
    "identity-unshared": dict(structure="subsetsum", activation="identity", shared=False),
}
SUBNET_PARTS = (ln.SubnetLinear, ln.SubnetConv1d, ln.SubnetConv2d, ln.MaskedWeight)


def subnet_model(seed=0, sparsity=0.7, **kw):
    """Linear, Conv1d, Conv2d and a grouped, strided Conv2d, with and without bias."""
    return nn.Sequential(
        ln.SubnetConv2d(2, 4, 3, padding=1, sparsity=sparsity, seed=seed, **kw), nn.ReLU(),
        ln.SubnetConv2d(4, 6, 3, 2, 1, 1, 2, True, sparsity=sparsity, seed=seed + 1, **kw),
        nn.Flatten(2),
        ln.SubnetConv1d(6, 4, 3, bias=True, sparsity=sparsity, seed=seed + 2, **kw), nn.Tanh(),
        nn.Flatten(),
        ln.SubnetLinear(4 * 14, 5, True, sparsity=sparsity, seed=seed + 3, **kw))


def train_step(model, x):
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    model(x).square().sum().backward()
    opt.step()


@pytest.mark.parametrize("sparse", [False, True], ids=["dense-storage", "sparse-storage"])
@pytest.mark.parametrize("kw", STRUCTS.values(), ids=STRUCTS.keys())
def test_export_computes_what_the_subnet_computes(kw, sparse):
    model, x = subnet_model(**kw), torch.randn(3, 2, 8, 8)
    train_step(model, x)  # masks that are not the initial ones
    rng = torch.get_rng_state()
    exported = export(model, sparse=sparse)
    assert torch.equal(torch.get_rng_state(), rng)  # (its plain layers drew weights it overwrote)
    assert not any(isinstance(m, SUBNET_PARTS) for m in exported.modules())
    assert any(isinstance(m, SUBNET_PARTS) for m in model.modules())  # the original is intact
    doubled = isinstance(exported[0], nn.Sequential)
    assert doubled == (kw.get("activation") == "relu")
    with torch.no_grad():
        torch.testing.assert_close(exported(x), model(x), rtol=1e-5, atol=1e-6)
        # each layer alone on an unbatched input, as nn.Conv*d and nn.Linear take it (the
        # [relu(x), relu(-x)] split of a relu structure split the height of a (C, H, W) input)
        for i, shape in ((0, (2, 8, 8)), (2, (4, 8, 8)), (4, (6, 16)), (7, (56,))):
            one = torch.randn(shape)
            torch.testing.assert_close(exported[i](one), model[i](one), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("sparse", [False, True], ids=["dense-storage", "sparse-storage"])
@pytest.mark.parametrize("kw", [STRUCTS["dense"], STRUCTS["relu-unshared"]],
                         ids=["dense", "relu-unshared"])
def test_a_convolution_padded_other_than_with_zeros_exports_its_padding(kw, sparse):
    """A converted nn.Conv2d(..., padding_mode='reflect') (Conv1d 'circular') exports to the
    plain convolution of that padding, stored dense or sparse, [relu(x), relu(-x)] split or not
    (the padding of the split input is the split of the padded input), scripted as well: it
    computes what the converted model computes."""
    model = convert(nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, padding_mode="reflect"),
                                  nn.Flatten(2), nn.Conv1d(4, 3, 3, padding=2,
                                                           padding_mode="circular")),
                    sparsity=0.5, seed=0, **kw)
    x = torch.randn(2, 2, 4, 4)
    exported = export(model, sparse=sparse)
    assert [m.padding_mode for m in exported.modules()
            if isinstance(m, nn.Conv1d | nn.Conv2d)] == ["reflect", "circular"]
    with torch.no_grad():
        assert torch.equal(exported(x), model(x))
    assert torch.equal(torch.jit.script(exported)(x), exported(x))


@pytest.mark.parametrize("sparse", [False, True], ids=["dense-storage", "sparse-storage"])
def test_a_channels_last_model_exports_channels_last(sparse):
    """The plain convolutions of a channels_last model are channels_last, computing exactly
    what the subnet layers compute; they were contiguous (another kernel, other outputs), and
    with sparse storage the weight each forward rebuilds was still contiguous."""
    model = subnet_model().to(memory_format=torch.channels_last)
    x = torch.randn(3, 2, 8, 8).to(memory_format=torch.channels_last)
    exported = export(model, sparse=sparse)
    for i in (0, 2):
        weight = exported[i].sparse_weight() if sparse else exported[i].weight
        assert weight.stride() == model[i].weight.stride() != model[i].weight.contiguous().stride()
        assert torch.equal(weight, model[i].weight)
    with torch.no_grad():
        assert torch.equal(exported(x), model(x))
    assert torch.equal(torch.jit.script(exported)(x), exported(x))

@pytest.mark.parametrize("sparse", [False, True], ids=["dense-storage", "sparse-storage"])
def test_export_keeps_the_evaluation_mode(sparse):
    """The modules export makes for a layer in evaluation are in evaluation: the sparse layers,
    and the split and the Sequential holding it, were made (and left) in training mode."""
    exported = export(subnet_model(structure="subsetsum", activation="relu").eval(),
                      sparse=sparse)
    assert [n for n, m in exported.named_modules() if m.training] == []
    assert all(m.training for m in export(subnet_model(), sparse=sparse).modules())

def test_export_keeps_the_hooks_on_subnet_layers():
    model = subnet_model(structure="subsetsum", activation="relu")
    seen = []
    model[0].register_forward_hook(lambda m, args, out: seen.append(out))
    model[7].register_forward_pre_hook(lambda m, args: (args[0] * 0,))
    x = torch.randn(3, 2, 8, 8)
    with torch.no_grad():
        exported, expected = export(model), model(x)
        assert torch.equal(exported(x), expected)  # the zeroing pre-hook, and the same layer 0
    assert len(seen) == 2 and torch.equal(seen[0], seen[1])
    torch.testing.assert_close(expected, model[7].bias.expand(3, 5))
    exported[0].register_forward_hook(lambda m, args, out: seen.append(out))
    model(x)
    assert len(seen) == 3  # a hook on the export is not the original's


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.script is deprecated in 2.x
def test_a_tied_layer_exports_to_one_plain_layer_under_each_name():
    """A subnet layer used twice (registered under two names) is one plain layer under both
    (the second name kept the subnet layer: not plain, and not scriptable)."""
    shared = ln.SubnetLinear(4, 4, True, sparsity=0.5, seed=0, structure="subsetsum")
    model, x = nn.Sequential(shared, nn.Tanh(), shared), torch.randn(3, 4)
    exported = export(model)
    assert exported[0] is exported[2] and not any(isinstance(m, SUBNET_PARTS)
                                                  for m in exported.modules())
    torch.testing.assert_close(torch.jit.script(exported)(x), model(x), rtol=1e-5, atol=1e-6)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.script is deprecated in 2.x
@pytest.mark.parametrize("make", [
    lambda: convert(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)), sparsity=0.5,
                    seed=0),
    lambda: ln.SubnetMultiheadAttention(8, 2, sparsity=0.5, seed=0)])
def test_scripting_the_subnet_model_itself_says_to_script_its_export(make):
    """torch.jit.script of a converted model failed deep inside torch ("Unknown type
    annotation: 'bool'"); it is one line naming the layer and what to script instead."""
    with pytest.raises(TypeError, match=r"^torch\.jit\.script: Subnet\w+ is a subnet layer, "
                                        r"which is not scriptable; script the exported model"):
        torch.jit.script(make())


def test_collapse_counts_match_the_structure():
    model = subnet_model(**STRUCTS["relu-shared"])
    exported = export(model)
    split, conv = exported[2]
    assert isinstance(split, SplitSigns) and split.groups == 2
    assert conv.in_channels == 8 and conv.groups == 2 and conv.weight.shape == (6, 4, 3, 3)
    identity = export(subnet_model(**STRUCTS["identity-unshared"]))
    assert isinstance(identity[2], nn.Conv2d) and identity[2].weight.shape == (6, 2, 3, 3)
    x = torch.randn(2, 6, 5)  # 3 groups of 2 channels, each as [relu(x_g), relu(-x_g)]
    halves = [torch.cat([x[:, g:g + 2].relu(), (-x[:, g:g + 2]).relu()], 1) for g in (0, 2, 4)]
    assert torch.equal(split_signs(x, 3, 1), torch.cat(halves, 1))
    assert split_signs is structure_split_signs  # one function for the layer and its export


def state_bytes(module):
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


def test_sparse_storage_keeps_only_kept_entries():
    model = subnet_model(sparsity=0.9)
    dense, sparse = export(model), export(model, sparse=True)
    for name, m in sparse.named_modules():
        if isinstance(m, (SparseLinear, SparseConv2d)):
            baked = dense.get_submodule(name).weight
            assert "weight" not in dict(m.named_parameters())
            assert m.values.numel() == int((baked != 0).sum()) == m.indices.numel()
            assert m.indices.dtype == torch.int32
            assert torch.equal(m.sparse_weight(), baked)
    assert state_bytes(sparse) < 0.35 * state_bytes(dense)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.script is deprecated in 2.x
@pytest.mark.parametrize("same_pad", [False, True], ids=["StdConv2d", "StdConv2dSame"])
def test_a_standardised_convolution_exports_sparse_storing_only_what_its_masks_keep(
        tmp_path, same_pad):
    """A subnet convolution that standardises its masked weight at each forward (timm's
    StdConv2d / StdConv2dSame) exports sparse storing its masked weight's kept entries (it
    stored the standardised weight, whose pruned entries are not 0: every entry) and
    standardises the rebuilt weight at each forward: the subnet layer's outputs, scripted too,
    its ``weight`` the standardised one (the dense export's), its state dict reloaded bit for
    bit."""
    def make(seed):
        return ln.SubnetConv2d(4, 6, 3, padding=0 if same_pad else 1, bias=True, sparsity=0.9,
                               seed=seed, same_pad=same_pad, std_eps=1e-5,
                               dtype=torch.float64).eval()

    def conv(exported):  # (same_pad: SamePad, then the convolution)
        return exported[-1] if same_pad else exported

    layer, x = make(0), torch.randn(2, 4, 7, 8, dtype=torch.float64)
    exported = export(layer, sparse=True)
    sparse, kept = conv(exported), int(layer.mask()["weight"].sum())
    assert isinstance(sparse, SparseConv2d)
    assert sparse.values.numel() == sparse.indices.numel() == kept < 0.15 * 6 * 4 * 3 * 3
    with torch.no_grad():
        expected = layer(x)
        assert torch.equal(sparse.weight, conv(export(layer)).weight)
        torch.testing.assert_close(exported(x), expected, rtol=0, atol=1e-12)
        torch.testing.assert_close(torch.jit.script(exported)(x), expected, rtol=0, atol=1e-12)
    torch.save(exported.state_dict(), tmp_path / "sparse.pt")
    other = export(make(1), sparse=True)  # (as many kept entries: other ones)
    other.load_state_dict(torch.load(tmp_path / "sparse.pt", weights_only=True))
    assert sorted(conv(other).state_dict()) == ["bias", "indices", "values"]
    for name, value in exported.state_dict().items():
        assert torch.equal(other.state_dict()[name], value), name
    with torch.no_grad():
        assert torch.equal(other(x), exported(x))


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.script is deprecated in 2.x
def test_a_scaled_standardised_convolution_exports_scaled_by_its_gain(tmp_path):
    """A subnet convolution that standardises its masked weight and scales each output channel
    by ``gain * std_scale`` (timm's ScaledStdConv2d) exports dense with that weight baked in,
    and sparse storing its masked weight's kept entries and the factors (``std_gain``, in its
    state dict) that scale the rebuilt weight at each forward: the subnet layer's outputs,
    scripted too; another export loads its state bit for bit. A standardised one (StdConv2d's)
    exported sparse and pickled before std_gain existed loads and computes as it did."""
    def make(seed):
        layer = ln.SubnetConv2d(4, 6, 3, padding=1, bias=True, sparsity=0.9, seed=seed,
                                std_eps=1e-5, std_scale=0.3, dtype=torch.float64).eval()
        with torch.no_grad():  # (other than 1s, as training leaves them)
            layer.gain.copy_(torch.linspace(0.5, 2.0, 6).reshape(6, 1, 1, 1) * (seed + 1))
        return layer

    layer, x = make(0), torch.randn(2, 4, 7, 8, dtype=torch.float64)
    dense, sparse = export(layer), export(layer, sparse=True)
    assert isinstance(sparse, SparseConv2d)
    assert sparse.values.numel() == int(layer.mask()["weight"].sum()) < 0.15 * 6 * 4 * 3 * 3
    with torch.no_grad():
        expected = layer(x)
        assert torch.equal(sparse.weight, dense.weight)
        for exported in (dense, sparse, torch.jit.script(sparse)):
            torch.testing.assert_close(exported(x), expected, rtol=0, atol=1e-12)
    torch.save(sparse.state_dict(), tmp_path / "sparse.pt")
    other = export(make(1), sparse=True)  # (other gains, as many kept entries: other ones)
    other.load_state_dict(torch.load(tmp_path / "sparse.pt", weights_only=True))
    assert sorted(other.state_dict()) == ["bias", "indices", "std_gain", "values"]
    with torch.no_grad():
        assert torch.equal(other(x), sparse(x))
        unscaled = export(ln.SubnetConv2d(4, 6, 3, sparsity=0.9, seed=0, std_eps=1e-5,
                                          dtype=torch.float64), sparse=True)
        expected = unscaled(x)
        del unscaled._buffers["std_gain"]
        torch.save(unscaled, tmp_path / "old.pt")
        assert torch.equal(torch.load(tmp_path / "old.pt", weights_only=False)(x), expected)


@pytest.mark.parametrize("sparse", [False, True], ids=["dense-storage", "sparse-storage"])
def test_export_allocates_no_dense_weight_it_throws_away(sparse):
    """A layer's export makes its baked weight (the masked product) and, stored dense, one
    copy of it: no dense weight it then replaces (the plain layer's own, materialised empty),
    nor, stored sparse, a copy of one whose non-zero entries are all it keeps."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from lotterynet.export import export_layer

    layer = ln.SubnetConv2d(6, 8, 3, bias=True, sparsity=0.9, seed=0)
    with torch.no_grad():
        layer.structure.weight.mask(torch.float32)  # (cached: the export computes no mask)
    made = []

    class NewDenseWeights(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            inputs = {t.untyped_storage().data_ptr() for t in args if isinstance(t, torch.Tensor)}
            if isinstance(out, torch.Tensor) and out.shape == (8, 6, 3, 3) and \
                    not out.is_meta and out.untyped_storage().data_ptr() not in inputs:
                made.append(func.__name__)
            return out

    with NewDenseWeights():
        export_layer(layer, sparse=sparse)
    assert made == (["mul.Tensor"] if sparse else ["mul.Tensor", "clone.default"])


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.script is deprecated in 2.x
def test_a_dense_export_pickles_without_naming_lotterynet():
    """An export is torch modules (and lotterynet.plain's where it holds one): a pickle of a
    dense one (torch.save(model)) loads without lotterynet. It held the loaded-k pre-hook of
    convert and build_model (lotterynet.convert._warn_loaded_k), and a converted HybridEmbed its
    guarded set_input_size, so it named lotterynet and needed it to load. Neither is left, and
    the exported embedding changes its patch size as timm's does."""
    from timm.layers import HybridEmbed
    made = [convert(nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2)), sparsity=0.5),
            ln.build_model("fc2", width=16, structure="dense", sparsity=0.5),
            convert(HybridEmbed(nn.Conv2d(3, 4, 2, stride=2), img_size=8, patch_size=2,
                                embed_dim=6), sparsity=0.5)]
    for model in made:
        exported = export(model)
        assert b"lotterynet" not in pickle.dumps(exported), type(model).__name__
        exported.load_state_dict(exported.state_dict())
    exported.set_input_size(patch_size=1)
    assert exported.proj.kernel_size == (1, 1)


def test_an_export_goes_through_torch_export_into_a_program_of_aten_ops(tmp_path):
    """README's "Bring your own model" and "Any model" examples: ``torch.export.export`` of
    ``ln.export(model, sparse=True)`` (its weights rebuilt from their stored entries, a ReLU
    subset-sum layer's split of signs), saved and loaded with ``torch.export``, computes what
    the export does, in a graph of aten operators only (nothing of lotterynet to import)."""
    model, x = subnet_model(**STRUCTS["relu-shared"]).eval(), torch.randn(3, 2, 8, 8)
    exported = export(model, sparse=True)
    program = torch.export.export(exported, (x,))
    assert {node.op for node in program.graph.nodes} == {"placeholder", "call_function",
                                                         "output"}
    assert all(str(node.target).startswith("aten.") for node in program.graph.nodes
               if node.op == "call_function")
    torch.export.save(program, tmp_path / "model.pt2")
    assert torch.equal(torch.export.load(tmp_path / "model.pt2").module()(x), exported(x))


def test_lenet5s_random_convolutions_export_as_torchs():
    """LeNet5's frozen random convolutions, which draw again from their seed when reset (an
    ``nn.Conv2d`` of lotterynet's), export as ``nn.Conv2d``: the export holds nothing of
    lotterynet but lotterynet.plain's pool (torch only), and computes what the model does."""
    model = ln.build_model("lenet5", sparsity=0.5)
    exported = export(model)
    assert type(exported[0]) is nn.Conv2d and type(exported[3]) is nn.Conv2d
    assert {type(m).__module__ for m in exported.modules()
            if type(m).__module__.startswith("lotterynet")} == {"lotterynet.plain"}
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(exported(x), model(x))


def test_a_sparse_export_pickled_before_weight_order_runs_as_before(tmp_path):
    """A sparse export pickled (torch.save(model)) before the sparse layers kept their
    weight's layout (weight_order) stored each weight's entries in its own order: it loads and
    computes what it did (its forward failed: no attribute 'weight_order'), scripted too."""
    from lotterynet.plain import _SparseStorage

    exported, x = export(subnet_model(), sparse=True).eval(), torch.randn(3, 2, 8, 8)
    with torch.no_grad():
        expected = exported(x)
    old = [m for m in exported.modules() if isinstance(m, _SparseStorage)]
    assert len(old) == 4 and all(m.weight_order == list(range(len(m.weight_shape))) for m in old)
    for m in old:  # (the entries of a contiguous weight are in its own order, as they were)
        del m.weight_order
        del m.std_eps  # (nor std_eps: it stored the weight it computes with)
        del m._buffers["std_gain"]  # (nor std_gain)
    torch.save(exported, tmp_path / "old.pt")
    loaded = torch.load(tmp_path / "old.pt", weights_only=False)
    with torch.no_grad():
        assert torch.equal(loaded(x), expected)
        assert torch.equal(torch.jit.script(loaded)(x), expected)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.script is deprecated in 2.x
@pytest.mark.parametrize("sparse", [False, True], ids=["dense-storage", "sparse-storage"])
def test_scripted_export_runs_without_lotterynet(tmp_path, sparse):
    model, x = subnet_model(**STRUCTS["relu-unshared"]), torch.randn(3, 2, 8, 8)
    torch.jit.script(export(model, sparse=sparse)).save(str(tmp_path / "m.pt"))
    torch.save(x, tmp_path / "x.pt")
    # lotterynet is made unimportable in the child (a None entry in sys.modules makes every
    # `import lotterynet` fail), whether or not it is installed; -I: isolated mode.
    script = ("import sys; sys.modules['lotterynet'] = None; import torch; "
              "m = torch.jit.load(sys.argv[1]); "
              "torch.save(m(torch.load(sys.argv[2], weights_only=True)), sys.argv[3])")
    subprocess.run([sys.executable, "-I", "-c", script, tmp_path / "m.pt", tmp_path / "x.pt",
                    tmp_path / "y.pt"], check=True, cwd=tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(torch.load(tmp_path / "y.pt"), model(x), rtol=1e-5,
                                   atol=1e-6)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.script is deprecated in 2.x
def test_a_scripted_export_runs_a_half_input_under_cpu_autocast_of_the_other_half_dtype():
    """As the export runs unscripted: its SplitSigns stacked ``[relu(x), relu(-x)]`` in the
    input's float16 under bfloat16 autocast (or bfloat16 under float16), which CPU autocast
    refuses ("Unexpected floating ScalarType in at::autocast::prioritize"); unscripted it
    casts to the autocast dtype first, which TorchScript cannot ask for. (The scripted model
    run under the other autocast dtype afterwards is only close: a scripted nn.Linear run under
    float16 and then bfloat16 autocast gives other numbers than unscripted, torch 2.14.)"""
    exported, x = export(subnet_model(**STRUCTS["relu-unshared"])), torch.randn(3, 2, 8, 8)
    scripted = torch.jit.script(exported)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(scripted(x.half()), exported(x.half()))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16):
        torch.testing.assert_close(scripted(x.bfloat16()), exported(x.bfloat16()), rtol=0.01,
                                   atol=0.001)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.script is deprecated in 2.x
def test_max_pool_2x2_gives_max_pool2d_outputs_and_gradients():
    pool = MaxPool2x2()
    scripted = torch.jit.script(pool)
    x = torch.randn(4, 3, 10, 12)
    x[0, 0, 0, 0] = float("nan")  # max-pool propagates NaN
    x[1, 1, :2, :2] = 0.5  # a tied window
    for inp in (x, x.contiguous(memory_format=torch.channels_last), x[:, :, :9, :11], x[0]):
        expected = torch.nn.functional.max_pool2d(inp, 2)
        for module in (pool, scripted):
            assert torch.equal(module(inp).nan_to_num(-9.0), expected.nan_to_num(-9.0))
    leaf = x.nan_to_num().requires_grad_()  # a gradient flows: max-pool's own, a tie to one
    g = torch.randn(4, 3, 5, 6)
    (ours,) = torch.autograd.grad(pool(leaf), leaf, g)
    (theirs,) = torch.autograd.grad(torch.nn.functional.max_pool2d(leaf, 2), leaf, g)
    assert torch.equal(ours, theirs) and int((ours[1, 1, :2, :2] != 0).sum()) == 1


@pytest.mark.parametrize("name,options", [("resnet18", dict(layers=(1, 1, 1, 1))),
                                          ("vit_tiny_patch16_224", dict(img_size=32))])
def test_export_converted_timm_model(name, options):
    model = convert(create_timm_model(name, seed=0, num_classes=10, **options),
                    sparsity=0.8, structure="subsetsum", pairs=2).eval()
    x = torch.randn(2, 3, 32, 32)
    exported = export(model, sparse=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(exported(x), model(x), rtol=1e-4, atol=1e-5)


def test_a_layer_whose_weight_its_parent_reads_exports_sparse_and_runs():
    """torchvision's Swin attention passes ``self.qkv.weight`` and ``self.proj.weight`` to its
    function itself: with ``sparse=True`` those layers are sparse too, their ``weight`` the
    dense weight rebuilt (a sparse layer had none: the export failed at its first forward,
    'SparseLinear' object has no attribute 'weight')."""
    from torchvision.models.swin_transformer import SwinTransformer

    torch.manual_seed(0)
    model = convert(SwinTransformer([4, 4], 8, [1, 1], [2, 2], [2, 2], num_classes=3),
                    sparsity=0.5).eval()
    exported = export(model, sparse=True).eval()
    attention = exported.features[1][0].attn
    assert type(attention.qkv) is SparseLinear and type(attention.proj) is SparseLinear
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(exported(x), model(x), rtol=1e-5, atol=1e-6)


class ReadsWeightInAMethod(nn.Module):
    """Reads a layer's weight in a method of its own, not in its forward: timm's MobileViT
    cross attention (``self.qkv_proj.weight`` to ``F.conv2d``), ConViT's ``get_rel_indices``
    (``self.qk.weight.device``)."""

    def __init__(self):
        super().__init__()
        self.proj, self.out = nn.Linear(6, 4), nn.Linear(4, 3)

    def forward(self, x):
        return self.out(self._project(x))

    def _project(self, x):
        return nn.functional.linear(x, self.proj.weight, self.proj.bias)


class ReadsItsChildsLayersWeights(nn.Module):
    """Reads the weight of its child's layer (``self.inner.out.weight``, a grandparent of it)
    and one by ``getattr``: no reading of its source finds them."""

    def __init__(self):
        super().__init__()
        self.inner, self.head = ReadsWeightInAMethod(), nn.Conv1d(3, 2, 1)

    def forward(self, x):
        h = self.inner(x) * self.inner.out.weight.abs().sum()
        weight = getattr(self.head, "weight")  # noqa: B009 (what the test reads)
        return nn.functional.conv1d(h.unsqueeze(-1), weight, self.head.bias)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.script is deprecated in 2.x
def test_a_sparse_layers_weight_is_its_dense_weight_for_any_module_that_reads_it():
    """A sparse layer's ``weight`` is the dense weight rebuilt from its entries, so a module
    that reads it itself runs, eager and scripted: a parent in a method of its own, a
    grandparent (``self.inner.out.weight``), ``getattr(self.head, 'weight')``. (Only the
    first kept its layer dense: the others failed with 'SparseLinear' object has no attribute
    'weight'.)"""
    torch.manual_seed(0)
    model = convert(nn.Sequential(ReadsItsChildsLayersWeights()), sparsity=0.5).eval()
    exported = export(model, sparse=True).eval()
    reader = exported[0]
    assert [type(m) for m in (reader.inner.proj, reader.inner.out, reader.head)] == \
        [SparseLinear, SparseLinear, ln.plain.SparseConv1d]
    dense = export(model)[0]
    for sparse, baked in ((reader.inner.out, dense.inner.out), (reader.head, dense.head)):
        assert torch.equal(sparse.weight, baked.weight) and "weight" not in sparse.state_dict()
    x = torch.randn(2, 6)
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(exported(x), expected, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(torch.jit.script(exported)(x), expected, rtol=1e-5,
                                   atol=1e-6)


class ReadsItsLayersAttributes(nn.Module):
    """Reads its layer's weight for the device and dtype of its input, as timm's XCiT
    positional encoding does (``self.token_projection.weight.device``), and its kernel size,
    as DaViT's downsampling does (``self.conv.kernel_size``)."""

    def __init__(self, layer):
        super().__init__()
        self.proj = layer

    def forward(self, x):
        x = x.to(self.proj.weight.device, self.proj.weight.dtype)
        return self.proj(x)[..., :self.proj.kernel_size[0]]


@pytest.mark.parametrize("sparse", [False, True], ids=["dense-storage", "sparse-storage"])
@pytest.mark.parametrize("make, options", [
    (lambda: nn.Conv2d(2, 3, 3), dict(structure="subsetsum")),  # SplitSigns, then the conv
    (lambda: __import__("timm").layers.Conv2dSame(2, 3, 3, stride=2), {}),  # SamePad, then it
], ids=["relu-subset-sum", "same-padded"])
def test_a_layer_exported_after_what_it_does_to_its_input_has_the_layers_attributes(
        make, options, sparse):
    """A layer exported as what its subnet layer does to the input first (ReLU subset sum's
    split, timm's SAME padding), then the plain layer, has that layer's attributes, so a
    module that reads them itself runs as the converted model did (the export was an
    ``nn.Sequential``: XCiT's and DaViT's exported with ReLU subset sum failed at their first
    forward, 'Sequential' object has no attribute 'weight', 'kernel_size'); its ``in_channels``
    is the input's (the split's layer's, twice that, was shown)."""
    torch.manual_seed(0)
    model = convert(ReadsItsLayersAttributes(make()), sparsity=0.5, **options).eval()
    exported = export(model, sparse=sparse)
    layer = exported.proj[-1]
    assert isinstance(layer, nn.Conv2d) and len(exported.proj) == 2
    assert torch.equal(exported.proj.weight, layer.weight)
    assert exported.proj.bias is layer.bias is not None
    assert exported.proj.in_channels == model.proj.in_channels == 2  # (not the split's 4)
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        exported.proj.nothing  # noqa: B018 (what the test reads)
    x = torch.randn(2, 2, 7, 7)
    with torch.no_grad():
        torch.testing.assert_close(exported(x), model(x), rtol=1e-5, atol=1e-6)


def test_structure_without_effective_weight_fails_clearly():
    class TwoLayers(nn.Module):
        def forward(self, x, op):
            return op(x, torch.ones(2, 3))

    layer = ln.SubnetLinear(3, 2)
    layer.structure, layer.structure_name = TwoLayers(), "twolayers"
    with pytest.raises(ValueError, match="'twolayers' has no single dense weight"):
        export(nn.Sequential(layer))


def test_package_exports_stay_functions_after_their_modules_are_imported():
    import importlib

    import lotterynet as ln

    importlib.import_module("lotterynet.export")
    importlib.import_module("lotterynet.convert")
    assert ln.export is export and ln.convert is convert


def test_package_lists_and_resolves_every_export():
    """``dir(lotterynet)`` (tab completion) shows the lazy exports, and each one resolves."""
    import lotterynet as ln

    assert set(ln.__all__) <= set(dir(ln))
    assert all(getattr(ln, name) is not None for name in ln.__all__)


def test_every_name_the_readme_calls_from_lotterynet_is_exported():
    """README writes the library's API as ``ln.NAME``; each such name is one of lotterynet's
    exports (``ln.build_model`` was not)."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    used = set(re.findall(r"\bln\.(\w+)", readme))
    assert used and used <= set(ln.__all__), sorted(used - set(ln.__all__))


def test_a_model_on_the_meta_device_exports_shapes_and_is_no_ticket(tmp_path):
    """On the meta device (shapes, no values) export gives the plain model's shapes; before,
    the mask's host read failed inside torch. A ticket needs values: refused, naming a tensor."""
    model = ln.convert(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)), sparsity=0.5,
                       seed=0, structure="subsetsum", activation="identity").to("meta")
    plain = ln.export(model)
    assert [(n, p.shape, p.device.type) for n, p in plain.named_parameters()] == [
        ("0.weight", (3, 4), "meta"), ("0.bias", (3,), "meta"),
        ("2.weight", (2, 3), "meta"), ("2.bias", (2,), "meta")]
    with pytest.raises(ValueError, match="tensor '0.bias' is on the meta device"):
        ln.save_ticket(model, tmp_path / "meta.ticket")


def test_a_compiled_model_exports_the_plain_model_it_runs():
    """``export(torch.compile(model))`` is ``export(model)``, the plain model itself: it was a
    copy of the compiled wrapper, which ``torch.jit.script`` refused with "module, class,
    method, function, traceback, frame, or code object was expected, got Sequential"."""
    torch.manual_seed(0)
    model = convert(nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)), sparsity=0.5,
                    seed=0).eval()
    x = torch.randn(4, 6)
    for sparse in (False, True):
        exported = export(torch.compile(model), sparse=sparse)
        assert type(exported) is nn.Sequential
        assert type(exported[0]) is (SparseLinear if sparse else nn.Linear)
        assert torch.equal(torch.jit.script(exported)(x), model(x))


@pytest.mark.parametrize("structure", ["malach", "dacunha"])
def test_exporting_a_two_stage_layer_says_why_and_what_to_do(structure):
    """export of a malach model said "structure 'malach' has no effective_weight()", naming
    an internal method."""
    model = convert(nn.Sequential(nn.Linear(4, 4), nn.ReLU()), sparsity=0.5, structure=structure)
    with pytest.raises(ValueError) as error:
        export(model)
    assert str(error.value) == (
        f"layer '0': structure {structure!r} has no single dense weight (a two-stage "
        f"structure, map, ReLU, map, has two), so export cannot bake its masks into a plain "
        f"layer: convert that layer with a one-weight structure (dense, subsetsum, fixedsize) "
        f"to export it, or torch.export the converted model itself")
