import copy
import fnmatch
import inspect
import pickle
import re
import threading
import warnings

import pytest
import torch
import torchvision
from timm.layers import HybridEmbed
from torch import nn

import lotterynet as ln
from lotterynet.convert import convert
from lotterynet.convert_checks import UnconvertibleLayers
from lotterynet.convert_record import CONVERT_RECORD
from lotterynet.layers import _SubnetLayer
from lotterynet.models import build_model
from lotterynet.ticket import frozen_digest
from lotterynet.timm_models import create_timm_model

TIMM_CASES = [("resnet18", None), ("vit_tiny_patch16_224", 32), ("convnext_atto", None),
              ("mobilenetv3_small_100", None)]
PLAIN = (nn.Linear, nn.Conv1d, nn.Conv2d)


def timm_model(name, img_size, seed=0, **model_kwargs):
    return create_timm_model(name, seed=seed, img_size=img_size, num_classes=10, **model_kwargs)


def torchvision_resnet18():
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10)


def models_under_test():
    return [pytest.param(lambda n=n, s=s: timm_model(n, s), id=n) for n, s in TIMM_CASES] + [
        pytest.param(torchvision_resnet18, id="torchvision_resnet18")]


def sgd_step(model, x):
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model.train()
    model(x).logsumexp(-1).sum().backward()
    opt.step()


@pytest.mark.parametrize("make", models_under_test())
def test_convert_and_train_one_step(make):
    model = make()
    targets = {n: m.weight.shape for n, m in model.named_modules() if isinstance(m, PLAIN)}
    norms = {n: p.clone() for n, p in model.named_parameters()
             if not isinstance(model.get_submodule(n.rpartition(".")[0]),
                               (*PLAIN, nn.modules.batchnorm._BatchNorm))}
    assert convert(model, sparsity=0.9, seed=1) is model
    layers = {n: m for n, m in model.named_modules() if isinstance(m, _SubnetLayer)}
    assert set(layers) == set(targets)
    assert not any(type(m) in PLAIN for m in model.modules())
    counts = ln.count_params(model)
    assert counts["maskable"] == sum(s.numel() for s in targets.values())
    assert counts["kept"] == sum(ln.kept_count(s.numel(), 0.9) for s in targets.values())
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            assert m.weight is None and m.bias is None and m.running_mean is not None
    before = {n: p.clone() for n, p in model.named_parameters()}
    sgd_step(model, torch.randn(2, 3, 32, 32))
    for n, p in model.named_parameters():
        if n.endswith("scores"):
            assert not torch.equal(p, before[n]), n
        else:  # frozen: random weights, biases, and everything else (norms, tokens, gammas)
            assert not p.requires_grad and torch.equal(p, before[n]), n
    for n, p in norms.items():  # non-converted parameters stay at their initial values
        assert torch.equal(model.get_parameter(n), p), n
    assert counts["trainable"] == counts["maskable"]
    assert counts["frozen"] == sum(p.numel() for p in model.parameters()) - 2 * counts["maskable"]


def test_same_call_same_model_and_distinct_layer_seeds():
    a, b, c = (convert(timm_model("resnet18", None, layers=(1, 1, 1, 1)), sparsity=0.5, seed=s)
               for s in (0, 0, 1))
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(),
                                                 b.state_dict().values()))
    w = a.layer1[0].conv1.structure.weight.weight
    assert not torch.equal(w, a.layer1[0].conv2.structure.weight.weight)  # same shape
    assert not torch.equal(w, c.layer1[0].conv1.structure.weight.weight)


def test_include_exclude_touch_only_selected_modules():
    model = timm_model("resnet18", None)
    original = {n: p.clone() for n, p in model.named_parameters()}
    untouched = {n: m for n, m in model.named_modules() if not n.startswith("layer1.")}
    convert(model, sparsity=0.5, include=["layer1.*"], exclude=["*.conv2", "*.bn2"])
    converted = {n for n, m in model.named_modules() if isinstance(m, _SubnetLayer)}
    assert converted == {"layer1.0.conv1", "layer1.1.conv1"}
    assert model.layer1[0].bn1.weight is None and model.layer1[0].bn2.weight.requires_grad
    for n, m in untouched.items():
        assert model.get_submodule(n) is m, n
    for n, p in model.named_parameters():
        if not fnmatch.fnmatch(n, "layer1.*.*1.*"):
            assert p.requires_grad and torch.equal(p, original[n]), n


def test_a_pattern_covers_what_is_inside_the_module_it_names():
    """``exclude=["conv1"]`` keeps a timm ResNet-10-T's deep stem (a Sequential named conv1)
    dense, as the README's --first-layer-dense line promises (the pattern matched the
    Sequential alone, and its convolutions were converted); include likewise; a pattern that
    names no module (a typo) is refused; a module registered twice is excluded by either name."""
    model = timm_model("resnet10t", None)
    stem = [n for n, m in model.named_modules() if n.startswith("conv1.") and
            isinstance(m, nn.Conv2d)]
    assert len(stem) == 3
    convert(model, sparsity=0.5, exclude=["conv1", "fc"])
    kinds = {n: type(m).__name__ for n, m in model.named_modules()}
    assert [kinds[n] for n in stem] == ["Conv2d"] * 3 and kinds["fc"] == "Linear"
    assert kinds["layer1.0.conv1"] == "SubnetConv2d" and model.conv1[1].affine
    everything = convert(small_model(), sparsity=0.5, include="")  # "": the model itself
    assert isinstance(everything[0], _SubnetLayer) and isinstance(everything[4], _SubnetLayer)
    only = convert(timm_model("resnet10t", None), sparsity=0.5, include=["layer4"])
    assert {n.split(".")[0] for n, m in only.named_modules() if isinstance(m, _SubnetLayer)} \
        == {"layer4"}
    for options in (dict(exclude=["fcc"]), dict(include=["layer4", "layer5"])):
        with pytest.raises(ValueError, match=r"pattern '(fcc|layer5)' names no module"):
            convert(timm_model("resnet10t", None), sparsity=0.5, **options)
    shared = nn.Linear(4, 4)
    tied = nn.ModuleDict({"a": shared, "b": shared, "c": nn.Linear(4, 4)})
    convert(tied, sparsity=0.5, exclude=["b"])
    assert tied["a"] is tied["b"] is shared and isinstance(tied["c"], _SubnetLayer)


def test_a_layer_with_tied_weights_is_refused():
    """A layer sharing a parameter with another module (a head tied to the embedding, two
    layers of one weight) would get frozen weights and scores of its own, untied without a
    word: refused, naming the tie, with the model unchanged; excluded, it keeps its tie."""
    model = nn.ModuleDict({"emb": nn.Embedding(10, 8), "body": nn.Linear(8, 8),
                           "head": nn.Linear(8, 10, bias=False)})
    model["head"].weight = model["emb"].weight
    with pytest.raises(ValueError, match=r"module 'head' shares its weight with 'emb\.weight' "
                                         r"\(tied weights\).*exclude=\['head'\]"):
        convert(model, sparsity=0.5)
    assert type(model["body"]) is nn.Linear and model["head"].weight is model["emb"].weight
    convert(model, sparsity=0.5, exclude=["head"])
    assert isinstance(model["body"], _SubnetLayer) and model["head"].weight is model["emb"].weight
    twins = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    twins[1].weight = twins[0].weight
    with pytest.raises(ValueError, match=r"module '0' shares its weight with '1\.weight'"):
        convert(twins, sparsity=0.5)
    assert type(twins[0]) is type(twins[1]) is nn.Linear


def small_model():
    return nn.Sequential(nn.Conv2d(3, 4, 3, bias=True), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Flatten(), nn.Linear(4 * 4 * 4, 3, bias=True))


@pytest.mark.parametrize("bias,present,trainable", [("frozen", True, False),
                                                    ("trainable", True, True),
                                                    ("none", False, False)])
def test_bias_modes(bias, present, trainable):
    model = convert(small_model(), sparsity=0.5, bias=bias)
    for layer in (model[0], model[4]):
        assert (layer.bias is not None) == present
        if present:
            assert layer.bias.requires_grad == trainable
    before = model[4].bias.clone() if present else None
    sgd_step(model, torch.randn(2, 3, 6, 6))
    if present:
        assert torch.equal(model[4].bias, before) != trainable
    n_bias = 7 if present else 0
    counts = ln.count_params(model)
    assert counts["trainable"] == counts["maskable"] + (n_bias if trainable else 0)
    assert counts["frozen"] == (0 if trainable else n_bias)


def test_a_model_converted_on_the_meta_device_takes_a_state_dict_by_assignment(tmp_path):
    """The lazy-init idiom: a model built and converted on the meta device (nothing allocated),
    then given a converted model's state dict by ``load_state_dict(assign=True)``, is that
    model (its tensors, which of them train, its ``k``); given storage by ``to_empty`` and
    ``reset_parameters`` instead, it is the model converted on the CPU, and so is its ticket.
    Such a model was refused ("convert: parameter '0.weight' is on the meta device"); one
    left uninitialised by to_empty is refused by save_ticket, which says so."""
    torch.manual_seed(0)
    trained = convert(small_model(), sparsity=0.5, seed=0).eval()
    trained[4].structure.weight.keep(5)  # (a k no fresh build has)
    fresh = convert(small_model(), sparsity=0.5, seed=0).eval()
    x = torch.randn(2, 3, 6, 6)
    for source in (trained, fresh):
        with torch.device("meta"):
            model = convert(small_model(), sparsity=0.5, seed=0)
        if source is trained:
            with pytest.warns(UserWarning, match="change the sparsity of layer '4'"):
                model.load_state_dict(trained.state_dict(), assign=True)
        else:
            model.to_empty(device="cpu")
            model.apply(lambda m: hasattr(m, "reset_parameters") and m.reset_parameters())
        model.eval()
        assert [(n, t.requires_grad) for n, t in model.named_parameters()] == [
            (n, t.requires_grad) for n, t in source.named_parameters()]
        assert all(torch.equal(t, source.get_parameter(n)) for n, t in model.named_parameters())
        assert [m.k for m in ln.masked_weights(model)] == [m.k for m in ln.masked_weights(source)]
        assert torch.equal(model(x), source(x))
    ln.save_ticket(model, tmp_path / "t.ticket")
    assert torch.equal(ln.load_ticket(tmp_path / "t.ticket", model=small_model()).eval()(x),
                       fresh(x))
    with torch.device("meta"):
        model = convert(small_model(), sparsity=0.5, seed=0)
    model.to_empty(device="cpu")
    with torch.no_grad():  # (what to_empty leaves, made zeros: memory freed may hold the seed's)
        for p in model.parameters():
            p.zero_()
    with pytest.raises(ValueError, match=r"^save_ticket: frozen parameter '0\.bias' is no "
                                         r"longer what its seed draws \(trained, or changed in "
                                         r"place, since the model was made; to_empty leaves it "
                                         r"uninitialised until reset_parameters draws it\), "):
        ln.save_ticket(model, tmp_path / "u.ticket")


def test_batchnorm_modes():
    model = convert(small_model(), sparsity=0.5)
    bn = model[1]
    assert not bn.affine and bn.weight is None and bn.bias is None
    sgd_step(model, torch.randn(2, 3, 6, 6))
    assert not torch.equal(bn.running_mean, torch.zeros(4))
    plain = small_model()
    bn = plain[1]
    model = convert(plain, sparsity=0.5, batchnorm="trainable")
    assert model[1] is bn and bn.affine and bn.weight.requires_grad
    assert ln.count_params(model)["trainable"] == ln.count_params(model)["maskable"] + 8


def test_others_modes_on_vit():
    frozen = convert(timm_model("vit_tiny_patch16_224", 32, depth=1), sparsity=0.5)
    trainable = convert(timm_model("vit_tiny_patch16_224", 32, depth=1), sparsity=0.5,
                        others="trainable")
    for model, flag in ((frozen, False), (trainable, True)):
        assert model.cls_token.requires_grad == flag
        assert model.pos_embed.requires_grad == flag
        assert model.blocks[0].norm1.weight.requires_grad == flag
    n_others = ln.count_params(trainable)["trainable"] - ln.count_params(trainable)["maskable"]
    assert n_others > 0 and ln.count_params(frozen)["frozen"] > n_others


def test_layer_scales_frozen_near_zero_are_warned_of(recwarn):
    """ConvNeXt's layer scales (1e-6 at init) frozen by ``others="frozen"`` silence every
    residual branch: a warning names one; trained, or of a model without them, none."""
    with pytest.warns(UserWarning, match=r"convert: 18 frozen layer scales are within "
                                         r"0.0001 of 0, such as 'features.1.0.layer_scale'"):
        convert(torchvision.models.convnext_tiny(num_classes=10), sparsity=0.5)
    recwarn.clear()
    convert(torchvision.models.convnext_tiny(num_classes=10), sparsity=0.5, others="trainable")
    convert(timm_model("vit_tiny_patch16_224", 32, depth=1), sparsity=0.5)  # (a 1e-6 cls token)
    assert not [w for w in recwarn if "layer scale" in str(w.message)]


def test_layer_scales_converted_on_the_meta_device_are_warned_of_at_their_first_load():
    """Converted on the meta device (``with torch.device("meta"): convert(...)``) a model's
    layer scales hold no values, and convert said nothing of those near 0: the first
    ``load_state_dict`` that gives them values warns of them, once, at the user's call; a
    load of larger ones, nothing."""
    with pytest.warns(UserWarning, match="frozen layer scale"):
        real = convert(nn.Sequential(ScaledBranch()), sparsity=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with torch.device("meta"):
            model, larger = (convert(nn.Sequential(ScaledBranch()), sparsity=0.5)
                             for _ in range(2))
        larger.load_state_dict({**real.state_dict(), "0.gamma": torch.ones(4)}, assign=True)
    line = r"^load_state_dict: 1 frozen layer scale is within 0\.0001 of 0, such as '0\.gamma': "
    exported = ln.export(model)  # (its check not left in an export: a pickle needs no lotterynet)
    assert not exported._load_state_dict_pre_hooks and b"lotterynet" not in pickle.dumps(exported)
    with pytest.warns(UserWarning, match=line) as said:
        model.load_state_dict(real.state_dict(), assign=True)
    assert len(said) == 1 and said[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.load_state_dict(real.state_dict())
        larger.load_state_dict(real.state_dict())  # (its layer scales were checked at its load)


@pytest.mark.parametrize("others,fate", [
    ("frozen", r"frozen at their initial random weights \(others='frozen'\), so neither pruned "
               r"nor trained; others='trainable' trains them \(dense\)"),
    ("trainable", r"trained but never pruned \(others='trainable'\)")], ids=["frozen", "trainable"])
def test_layers_convert_does_not_replace_are_warned_of(recwarn, tmp_path, others, fate):
    """A UNet decoder's transposed convolutions (and Conv3d, Bilinear) are left dense under
    ``others``: a warning names them and what becomes of them; excluded, or in a model of
    Conv2d/Linear layers, none; nor again when a ticket's save and load replay the call."""
    def unet():
        return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ConvTranspose2d(8, 4, 2, 2), nn.ReLU(),
                             nn.Conv3d(1, 2, 1), nn.LayerNorm(4), nn.Linear(4, 2))
    with pytest.warns(UserWarning, match=rf"^convert: 2 layers of types it does not replace "
                                         rf"\(ConvTranspose2d, Conv3d: '1', '3'\) are left dense, "
                                         rf"{fate}; exclude them to leave them as the model made "
                                         rf"them$"):
        model = convert(unet(), sparsity=0.5, others=others, seed=0)
    assert model[1].weight.requires_grad is (others == "trainable")
    recwarn.clear()
    ln.save_ticket(model, tmp_path / "unet.ticket")
    ln.load_ticket(tmp_path / "unet.ticket", model=unet())
    assert not [w for w in recwarn if "does not replace" in str(w.message)]
    convert(unet(), sparsity=0.5, others=others, exclude=["1", "3"])
    convert(nn.Sequential(nn.Conv2d(3, 8, 3), nn.LayerNorm(4), nn.Linear(4, 2)), sparsity=0.5,
            others=others)
    assert not [w for w in recwarn if "does not replace" in str(w.message)]


def test_recurrent_layers_convert_does_not_replace_are_warned_of():
    """A CRNN's LSTM (GRU, RNN, their cells) was left dense and, under others='frozen', frozen
    at its initial random weights without a word, where a transposed convolution left so is
    warned of (QA); it is warned of too."""
    with pytest.warns(UserWarning, match=r"^convert: 3 layers of types it does not replace "
                                         r"\(LSTM, GRUCell, RNN: '1', '2', '3'\) are left dense"):
        model = convert(nn.Sequential(nn.Linear(4, 4), nn.LSTM(4, 4), nn.GRUCell(4, 4),
                                      nn.RNN(4, 4)), sparsity=0.5)
    assert not model[1].weight_ih_l0.requires_grad


def test_timms_cond_conv_convert_does_not_replace_is_warned_of():
    """timm's CondConv2d (EfficientNet-CondConv's experts, a raw weight parameter, no
    nn.Conv2d) was frozen at its initial random weights without a word, where the other layers
    convert leaves dense are warned of; it is warned of too."""
    from timm.layers import CondConv2d

    with pytest.warns(UserWarning, match=r"^convert: 1 layer of types it does not replace "
                                         r"\(CondConv2d: '1'\) is left dense, frozen"):
        model = convert(nn.Sequential(nn.Conv2d(3, 4, 1), CondConv2d(4, 4, 3)), sparsity=0.5)
    assert not model[1].weight.requires_grad



def test_a_vits_patch_size_changed_after_convert_is_refused():
    """timm's set_input_size(patch_size=...) on a converted ViT silently put a dense Conv2d in
    place of the subnet patch embedding (its masked weights resampled, frozen, never pruned);
    it is refused where timm makes the swap, the model left as it was, with what to do. A
    change of image size alone, the model's export (which scripts) and a patch size changed
    before convert are as before."""
    model = convert(timm_model("vit_tiny_patch16_224", 16, depth=1, patch_size=8, embed_dim=16,
                               num_heads=2), sparsity=0.5)
    proj = model.patch_embed.proj
    with pytest.raises(ValueError, match=r"^PatchEmbed\.proj is a subnet layer \(convert\(\)\), "
                                         r"which a change of patch size .* would replace by a "
                                         r"dense Conv2d .*: change the patch size before "
                                         r"convert\(\)"):
        model.set_input_size(patch_size=4)
    assert model.patch_embed.proj is proj and model.patch_embed.patch_size == (8, 8)
    model.set_input_size(img_size=32)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    torch.jit.script(ln.export(model))
    resized = timm_model("vit_tiny_patch16_224", 16, depth=1, patch_size=8, embed_dim=16,
                         num_heads=2)
    resized.set_input_size(patch_size=4)
    assert convert(resized, sparsity=0.5).patch_embed.proj.kernel_size == (4, 4)


def test_a_hybrid_embeds_patch_size_changed_after_convert_is_refused():
    """timm's HybridEmbed.set_input_size(patch_size=...) asserted that its proj is an
    nn.Conv2d (timm's bare AssertionError); refused first, in the line that refuses the swap
    where the assert does not run (python -O: timm's own assignment of a dense Conv2d), the
    model left as it was. The exported copy (a plain proj) changes its patch size as timm's."""
    embed = convert(HybridEmbed(nn.Conv2d(3, 4, 2, stride=2), img_size=8, patch_size=2,
                                embed_dim=6), sparsity=0.5)
    proj, refused = embed.proj, (r"^HybridEmbed\.proj is a subnet layer \(convert\(\)\), which "
                                 r"a change of patch size .*: change the patch size before "
                                 r"convert\(\)")
    with pytest.raises(ValueError, match=refused):
        embed.set_input_size(patch_size=1)
    with pytest.raises(ValueError, match=refused):
        embed.proj = nn.Conv2d(4, 6, 1, stride=1)  # (what set_input_size does under -O)
    assert embed.proj is proj and embed.patch_size == (2, 2)
    embed.set_input_size(img_size=16)
    assert embed(torch.randn(1, 3, 16, 16)).shape == (1, 16, 6)
    exported = ln.export(embed)
    exported.set_input_size(patch_size=1)
    assert exported.proj.kernel_size == (1, 1)

class ReadsItsLayersWeight(nn.Module):
    """A module whose forward passes a layer's weight to ``F.linear`` itself, as torchvision's
    Swin attention does with ``self.qkv.weight``."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(6, 4)

    def forward(self, x):
        return nn.functional.linear(x, self.proj.weight, self.proj.bias)


class ReadsItsLayersWeightInAMethod(nn.Module):
    """The same in a method of its own, not in its forward, as timm's MobileViT cross attention
    passes ``self.qkv_proj.weight`` to ``F.conv2d``."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(6, 4)

    def forward(self, x):
        return self._project(x)

    def _project(self, x):
        return nn.functional.linear(x, self.proj.weight, self.proj.bias)


class HandsOverToItsBase(ReadsItsLayersWeightInAMethod):
    """A subclass whose forward hands over to its base's."""

    def forward(self, x):
        return super().forward(x)


class ReadsItsLayersWeightByGetattr(nn.Module):
    """Reads it as ``getattr(self.proj, "weight")``."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(6, 4)

    def forward(self, x):
        weight = getattr(self.proj, "weight")  # noqa: B009 (what the test reads)
        return nn.functional.linear(x, weight, self.proj.bias)


class ReadsItsChildsLayersWeight(nn.Module):
    """Reads the weight of its child's layer (``self.inner.proj.weight``: a grandparent of
    it), in a method of its own; the child itself does not read it."""

    def __init__(self):
        super().__init__()
        self.inner = nn.ModuleDict({"proj": nn.Linear(6, 4)})

    def forward(self, x):
        return self._project(x)

    def _project(self, x):
        return nn.functional.linear(x, self.inner.proj.weight, self.inner.proj.bias)


@pytest.mark.parametrize("reader,path", [
    (ReadsItsLayersWeight, "proj"), (ReadsItsLayersWeightInAMethod, "proj"),
    (HandsOverToItsBase, "proj"), (ReadsItsLayersWeightByGetattr, "proj"),
    (ReadsItsChildsLayersWeight, "inner.proj")])
@pytest.mark.parametrize("structure", ["subsetsum", "fixedsize"])
def test_a_layer_whose_weight_its_parent_reads_is_warned_of_under_relu(recwarn, structure,
                                                                       reader, path):
    """With ReLU a subset-sum layer's weight is [P, 2N]: a parent reading it itself fails at
    its first forward with "mat1 and mat2 shapes cannot be multiplied (2x6 and 12x4)", naming
    no layer (QA: torchvision's swin_t, subsetsum). convert warns of it in one line (a warning:
    the read matched in the source may never run): the layer read in the parent's forward, in
    a method it calls or in its base's, by getattr, or by a grandparent; the include and
    exclude it names convert the model, the layer with activation='identity' (an [out, in]
    weight), unwarned, and it runs."""
    model = nn.Sequential(reader(), nn.ReLU(), nn.Linear(4, 3))
    pattern = f"*.{path}"  # (covering_patterns: '0.proj' read with its number as *)
    with pytest.warns(UserWarning, match=(
            rf"^convert: {reader.__name__} reads self\.{path}\.weight itself "
            rf"\(layer '0\.{path}'\), which with activation='relu' is \[P, 2N\] .*, so its "
            rf"forward will fail if it runs that read: convert it with activation='identity', "
            rf"in a call of its own \(include=\['\*\.{path}'\]\), and leave it out of this one "
            rf"\(exclude=\['\*\.{path}'\]\)$")):
        relu = convert(nn.Sequential(reader(), nn.ReLU(), nn.Linear(4, 3)), sparsity=0.5,
                       structure=structure)
    with pytest.raises(RuntimeError, match=rf"^{reader.__name__} reads self\.{path}\.weight "
                                           rf"itself \(layer '0\.{path}'\), .*, so linear "
                                           r"failed \(mat1 and mat2 shapes cannot be multiplied"):
        relu(torch.randn(2, 6))
    recwarn.clear()
    convert(model, sparsity=0.5, structure=structure, exclude=[pattern])
    convert(model, sparsity=0.5, structure=structure, activation="identity", include=[pattern])
    assert model.get_submodule(f"0.{path}").structure.activation == "identity"
    assert model[2].structure.activation == "relu"
    assert model(torch.randn(2, 6)).shape == (2, 3) and not recwarn.list


@pytest.mark.parametrize("structure", ["malach", "orseau", "dacunha"])
def test_a_layer_whose_weight_its_parent_reads_is_warned_of_under_a_two_stage_structure(
        recwarn, structure):
    """A two-stage layer has no single weight: a parent reading it itself fails at its first
    forward with "SubnetLinear with structure 'malach' has no single weight", naming no layer.
    convert warns of it as of a ReLU subset-sum layer read so; the include and exclude it
    names convert the model, the layer dense, unwarned, and it runs."""
    model = nn.Sequential(ReadsItsLayersWeight(), nn.ReLU(), nn.Linear(4, 3))
    with pytest.warns(UserWarning, match=(
            rf"^convert: ReadsItsLayersWeight reads self\.proj\.weight itself \(layer "
            rf"'0\.proj'\), which with structure='{structure}' does not exist: its two stages "
            rf"\(map, ReLU, map\) are not one linear map, so its forward will fail if it runs "
            rf"that read: convert it with structure='dense', in a call of its own "
            rf"\(include=\['\*\.proj'\]\), and leave it out of this one "
            rf"\(exclude=\['\*\.proj'\]\)$")):
        convert(nn.Sequential(ReadsItsLayersWeight()), sparsity=0.5, structure=structure)
    recwarn.clear()
    convert(model, sparsity=0.5, structure=structure, exclude=["*.proj"])
    convert(model, sparsity=0.5, structure="dense", include=["*.proj"])
    assert model[0].proj.structure_name == "dense" and model[2].structure_name == structure
    assert model(torch.randn(2, 6)).shape == (2, 3) and not recwarn.list


def test_the_advice_for_a_two_stage_layer_read_or_attention_drops_what_dense_refuses(recwarn):
    """The advice to convert a two-stage layer whose weight its parent reads, or an attention,
    with structure='dense' was refused as written when the call also passed pairs / hidden,
    which dense does not read ("hidden=8 is not an option of structure 'dense'"). It names them
    to drop; converted as it says, the model runs, unwarned."""
    def model():
        return nn.Sequential(ReadsItsLayersWeight(), nn.ReLU(), nn.Linear(4, 3))
    options = dict(sparsity=0.5, structure="malach", pairs=3, hidden=8)
    with pytest.warns(UserWarning, match=r"convert it with structure='dense' and without "
                                         r"pairs=3, hidden=8, in a call of its own "
                                         r"\(include=\['\*\.proj'\]\)"):
        convert(model(), **options)
    recwarn.clear()
    ours = convert(model(), **options, exclude=["*.proj"])
    convert(ours, sparsity=0.5, structure="dense", include=["*.proj"])
    assert ours(torch.randn(2, 6)).shape == (2, 3) and not recwarn.list
    with pytest.raises(ValueError, match=r"convert it with structure='dense' and without "
                                         r"hidden=8, in a call of its own"):
        convert(nn.Sequential(nn.MultiheadAttention(8, 2), nn.Linear(8, 8)), sparsity=0.5,
                structure="orseau", hidden=8)


class ScaledBranch(nn.Module):
    """A residual branch under a layer scale of 1e-6 (ConvNeXt's)."""

    def __init__(self):
        super().__init__()
        self.fc, self.gamma = nn.Linear(6, 4), nn.Parameter(torch.full((4,), 1e-6))

    def forward(self, x):
        return self.gamma * self.fc(x)


@pytest.mark.parametrize("first,structure,warned", [
    (ReadsItsLayersWeight, "subsetsum", "reads self.proj.weight itself"),
    (ScaledBranch, "dense", "frozen layer scale"),
    (lambda: nn.Sequential(nn.Linear(6, 4), nn.GRUCell(4, 4)), "dense", "does not replace"),
], ids=["weight-reader", "layer-scale", "left-dense"])
def test_convert_warns_before_it_changes_the_model(first, structure, warned):
    """convert warned of a layer whose weight its parent reads, of frozen near-zero layer
    scales and of layers left dense after it had replaced the layers, made batch norms
    non-affine and frozen the rest: a warnings filter that makes them errors (pytest -W error)
    left the model converted in part, with no record of the call. It warns before it changes
    anything: such an error leaves the model as it was."""
    model = nn.Sequential(first(), nn.BatchNorm1d(4), nn.Linear(4, 3))
    state = {name: (p.clone(), p.requires_grad) for name, p in model.named_parameters()}
    types = [type(m) for m in model.modules()]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(UserWarning, match=re.escape(warned)):
            convert(model, sparsity=0.5, structure=structure)
    assert [type(m) for m in model.modules()] == types
    assert not hasattr(model, CONVERT_RECORD)
    after = dict(model.named_parameters())
    assert after.keys() == state.keys()
    assert all(torch.equal(after[n], p) and after[n].requires_grad is grad
               for n, (p, grad) in state.items())


def test_swin_converted_with_relu_subset_sum_is_warned_of_naming_its_attention_layers(recwarn):
    """torchvision's Swin attention passes self.qkv.weight and self.proj.weight to
    F.linear itself: swin_t converted with subsetsum (ReLU) was warned of, one layer, and its
    forward failed deep in torch ("mat1 and mat2 shapes cannot be multiplied"), naming no
    layer. The warning names both layers of every block, as patterns, and the forward fails
    with its line, naming the layer it ran into; converted as it says, the model runs,
    unwarned."""
    from torchvision.models.swin_transformer import SwinTransformer

    def swin():
        return SwinTransformer([4, 4], 8, [1, 1], [2, 2], [2, 2], num_classes=3)
    patterns = ["features.*.*.attn.qkv", "features.*.*.attn.proj"]
    advice = re.escape(f"(include={patterns}), and leave them out of this one "
                       f"(exclude={patterns})")
    with pytest.warns(UserWarning, match=re.escape(
            "convert: ShiftedWindowAttention reads self.qkv.weight itself (layer "
            "'features.1.0.attn.qkv'; 3 other layers read so too)") + ".*" + advice):
        relu = convert(swin(), sparsity=0.5, structure="subsetsum")
    with pytest.raises(RuntimeError, match=re.escape(
            "ShiftedWindowAttention reads self.qkv.weight itself (layer 'features.1.0.attn.qkv'; "
            "3 other layers read so too), which with activation='relu' is [P, 2N] over "
            "[relu(x), relu(-x)], not [out, in], so linear failed (mat1 and mat2 shapes cannot "
            "be multiplied") + r".*\): convert them with activation='identity', in a call of "
                               r"their own " + advice + "$"):
        relu(torch.randn(2, 3, 16, 16))
    recwarn.clear()
    model = swin()
    convert(model, sparsity=0.5, structure="subsetsum", exclude=patterns)
    convert(model, sparsity=0.5, structure="subsetsum", activation="identity", include=patterns)
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 3) and not recwarn.list


class ReadsItsLayersWeightOnlyWhereItWorks(nn.Module):
    """Reads its layer's weight in a branch its forward does not take (timm's MobileViT v2
    reads ``self.qkv_proj.weight`` only in a cross attention it never calls) and for its
    shape only."""

    def __init__(self):
        super().__init__()
        self.proj, self.cross = nn.Linear(6, 4), False

    def forward(self, x):
        if self.cross:
            return nn.functional.linear(x, self.proj.weight, self.proj.bias)
        return self.proj(x)[:, :self.proj.weight.shape[0]]


def test_a_parent_whose_read_of_its_layers_weight_works_is_converted_and_runs(
        recwarn, tmp_path):
    """The read is matched in the source text, which cannot tell whether the forward runs it,
    or reads only what works: such a model (timm's mobilevitv2_050, vit_small_patch16_dinov3,
    ...) was refused by convert, and its ticket no longer loaded. It is converted after a
    warning, runs, and its ticket's save and load (replaying the call) warn no more."""
    def model():
        return nn.Sequential(ReadsItsLayersWeightOnlyWhereItWorks(), nn.ReLU(), nn.Linear(4, 3))
    with pytest.warns(UserWarning, match=r"^convert: ReadsItsLayersWeightOnlyWhereItWorks "
                                         r"reads self\.proj\.weight itself"):
        relu = convert(model(), sparsity=0.5, structure="subsetsum", seed=0)
    assert relu(torch.randn(2, 6)).shape == (2, 3)
    recwarn.clear()
    ln.save_ticket(relu, tmp_path / "m.ticket")
    loaded = ln.load_ticket(tmp_path / "m.ticket", model=model())
    assert loaded(torch.randn(2, 6)).shape == (2, 3) and not recwarn.list


class ReadsItsLayersDeviceOrWeightOffItsForward(nn.Module):
    """Reads its layer's weight only for its device (ConViT's ``get_rel_indices``) or dtype
    and in a method its forward does not call (timm's ``PatchEmbed.set_input_size``)."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(6, 4)

    def forward(self, x):
        dtype = getattr(self.proj, "weight").dtype  # noqa: B009 (what the test reads)
        return self.proj(x.to(self.proj.weight.device, dtype))

    def resize(self):
        return self.proj.weight.clone()


def test_a_parent_reading_its_layers_weight_where_its_forward_does_not_is_not_refused(
        recwarn):
    """Its forward works with the [P, 2N] weight: convert neither refuses nor warns (a read of
    the device was warned of: XCiT's positional encoding; and the methods a forward does not
    call are not read, or every timm ViT's PatchEmbed would be, for its set_input_size)."""
    relu = convert(nn.Sequential(ReadsItsLayersDeviceOrWeightOffItsForward()), sparsity=0.5,
                   structure="subsetsum")
    assert relu(torch.randn(2, 6)).shape == (2, 4) and not recwarn.list


@pytest.mark.parametrize("kwargs,words", [
    (dict(bias="frozn"), ["frozn", "frozen", "trainable", "none"]),
    (dict(batchnorm="affine"), ["affine", "non-affine", "trainable"]),
    (dict(others="learn"), ["learn", "frozen", "trainable"]),
    (dict(structure="nope"), ["nope", "dense", "subsetsum"]),
])
def test_bad_values_name_value_and_choices(kwargs, words):
    with pytest.raises(ValueError) as info:
        convert(small_model(), sparsity=0.5, **kwargs)
    assert all(w in str(info.value) for w in words)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.script is deprecated in 2.x
def test_unsupported_layers_fail_clearly():
    """Layers convert does not take are refused, naming them and the way round; so is a
    TorchScript model, which was refused as a model without a convertible layer (its modules
    are TorchScript's), saying nothing of why (QA)."""
    with pytest.raises(TypeError, match=r"^convert: the model is TorchScript .* convert the "
                                        r"model itself, and script its export"):
        convert(torch.jit.script(nn.Sequential(nn.Linear(3, 3))), sparsity=0.5)
    class OwnLinear(nn.Linear):
        pass

    model = nn.Sequential(nn.Linear(3, 3), OwnLinear(3, 3))
    with pytest.raises(ValueError, match=r"'1' is a .*OwnLinear.*exclude=\['1'\]"):
        convert(model, sparsity=0.5)
    convert(model, sparsity=0.5, exclude=["1"])
    assert isinstance(model[0], ln.SubnetLinear) and type(model[1]) is OwnLinear
    lazy = nn.Sequential(nn.LazyLinear(3))
    with pytest.raises(ValueError, match=r"'0' is an uninitialised lazy module \(LazyLinear\)"
                                         r".*run one forward pass"):
        convert(lazy, sparsity=0.5)
    lazy(torch.randn(2, 5))
    assert isinstance(convert(lazy, sparsity=0.5)[0], ln.SubnetLinear)
    with pytest.raises(ValueError, match="'0'.*single linear maps.*'subsetsum'"):
        convert(nn.Sequential(nn.MultiheadAttention(8, 2)), sparsity=0.5, structure="subsetsum")
    with pytest.raises(ValueError, match="'1'.*keeps no weight"):
        convert(nn.Sequential(nn.Linear(9, 9), nn.Linear(2, 1)), sparsity=0.9)


def test_shared_module_is_converted_once():
    shared = nn.Linear(4, 4)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    convert(model, sparsity=0.5)
    assert isinstance(model[0], ln.SubnetLinear) and model[0] is model[2]


def test_timm_builder_reproducible_and_adapted():
    spec = dict(model_name="vit_tiny_patch16_224", in_chans=1, num_classes=10, img_size=28,
                model_kwargs={"depth": 2, "patch_size": 7}, sparsity=0.8, seed=4)
    a, b = build_model("timm", **spec), build_model("timm", **spec)
    c = build_model("timm", **{**spec, "seed": 5})
    x = torch.randn(2, 1, 28, 28)
    a.eval(), b.eval(), c.eval()
    assert a(x).shape == (2, 10) and torch.equal(a(x), b(x))
    assert torch.equal(a.pos_embed, b.pos_embed) and not torch.equal(a.pos_embed, c.pos_embed)
    assert a.spec == {"name": "timm", **spec}
    # 16x16 patches on 28x28 images would see the top-left 16x16 pixels only
    with pytest.raises(ValueError, match="16x16 patches cover 16x16 of the 28x28 pixels.*"
                                         "'patch_size': 7"):
        build_model("timm", **{**spec, "model_kwargs": {"depth": 2}})
    # padding the image, as that refusal says: dynamic_img_pad alone has too few position
    # embeddings for the padded image's patches (it was let through, to fail at the forward)
    padded = {"depth": 2, "dynamic_img_size": True, "dynamic_img_pad": True}
    with pytest.raises(ValueError, match="'dynamic_img_size': True, 'dynamic_img_pad': True"):
        build_model("timm", **{**spec, "model_kwargs": {"depth": 2, "dynamic_img_pad": True}})
    assert build_model("timm", **{**spec, "model_kwargs": padded})(x).shape == (2, 10)
    # img_size is dropped for models that take none
    cnn = build_model("timm", model_name="resnet18", in_chans=1, num_classes=10, img_size=28,
                      model_kwargs={"layers": (1, 1, 1, 1)}, sparsity=0.8)
    assert cnn(x).shape == (2, 10)


def test_a_hybrid_vits_patches_tile_its_backbones_features():
    """A hybrid ViT's patches tile its backbone's feature map (8x8 for a 32x32 image), not the
    image: it was refused at any size ('8x8 patches cover 8x8 of the 32x32 pixels'). Its
    weight-standardised stem convolution (a StdConv2dSame, TF-"SAME" padded under stride 2)
    converts with the rest."""
    spec = dict(model_name="vit_tiny_r_s16_p8_224", in_chans=1, num_classes=10, img_size=32,
                sparsity=0.5, seed=0)
    model = build_model("timm", **spec).eval()
    stem = model.patch_embed.backbone.conv
    assert isinstance(stem, ln.SubnetConv2d) and stem.same_pad and stem.std_eps == 1e-8
    assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 10)


def test_converting_again_converts_only_new_layers():
    """A second call that selects only subnet layers is refused and not recorded (its
    sparsity was ignored, yet recorded for the ticket to replay); one that selects a new layer
    converts it and leaves the subnet layers alone."""
    model = convert(small_model(), sparsity=0.5, batchnorm="trainable", exclude="4")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    layer = model[0]
    with pytest.raises(ValueError, match=r"already converted.*sparsity=0\.9.*"
                                         r"layer\.sparsity = 0\.9.*global_topk\(model, 0\.9\)"):
        convert(model, sparsity=0.9, seed=7, batchnorm="trainable", exclude="4")
    assert len(model.lotterynet_converts) == 1
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    convert(model, sparsity=0.9, seed=7, batchnorm="trainable")
    assert model[0] is layer and layer.sparsity == 0.5 and model[4].sparsity == 1 - 19 / 192
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items()
               if not k.startswith("4."))
    assert all(m.scores.requires_grad for m in ln.masked_weights(model))
    assert len(model.lotterynet_converts) == 2


@pytest.mark.parametrize("options", [dict(include="layer9.*"), dict(exclude="*"),
                                     dict(exclude=""), {}],
                         ids=["typo-include", "all-excluded", "model-excluded",
                              "nothing-convertible"])
def test_convert_that_selects_no_layer_is_refused_and_changes_nothing(options):
    model = torchvision_resnet18() if options else nn.Sequential(nn.BatchNorm1d(4), nn.ReLU())
    before = {n: (type(m), [p.requires_grad for p in m.parameters(recurse=False)])
              for n, m in model.named_modules()}
    with pytest.raises(ValueError, match="no layer to convert is selected") as refused:
        convert(model, sparsity=0.5, **options)
    assert ("layer1.0.conv1" if options else "layers: none") in str(refused.value)
    assert {n: (type(m), [p.requires_grad for p in m.parameters(recurse=False)])
            for n, m in model.named_modules()} == before


@pytest.mark.parametrize("call", [
    lambda: ln.convert("resnet18", sparsity=0.5), lambda: ln.count_params([nn.Linear(2, 2)]),
    lambda: ln.export(None), lambda: ln.save_ticket({"model": 1}, "unused.ticket"),
    lambda: ln.load_ticket("unused.ticket", model="fc2"), lambda: ln.global_topk("model", 0.5),
    lambda: frozen_digest("resnet18")],
    ids=["convert", "count_params", "export", "save_ticket", "load_ticket", "global_topk",
         "frozen_digest"])
def test_api_entry_points_refuse_what_is_not_a_module(call):
    with pytest.raises(TypeError, match=r"takes a torch\.nn\.Module, got (str|list|NoneType|dict)"):
        call()


def test_refused_convert_leaves_the_model_as_it_was():
    """A layer refused late (here the last, whose one weight 0.9 would prune) must not leave
    batch norms stripped and norms frozen before it: nothing changes."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.LayerNorm(4), nn.Linear(1, 1))
    before = {n: p.clone() for n, p in model.named_parameters()}
    with pytest.raises(ValueError, match="'3'.*keeps no weight"):
        convert(model, sparsity=0.9)
    assert type(model[0]) is nn.Conv2d and model[1].affine and model[1].weight is not None
    assert all(p.requires_grad and torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert set(before) == {n for n, _ in model.named_parameters()}


@pytest.mark.parametrize("sparsity,options,advice", [
    (0.99, dict(), r"use at most 0\.979167, leave the layer out \(exclude=\['0'\]\)"),
    (0.99, dict(structure="subsetsum", activation="identity", pairs=2),
     r"with 6 entries; use at most 0\.833333, leave the layer out \(exclude=\['0'\]\) or "
     r"unshare the first-stage weights u \(shared=False\)"),
    (0.9998, dict(exclude=["3"]),
     r"use at most 0\.979167, leave the 2 layers that keep none out \(exclude=\['3', '0', '2'\]\)"),
    (0.99, dict(structure="fixedsize", activation="identity", pairs=2),  # (every layer)
     r"with 2 entries; use at most 0\.5"),
], ids=["dense", "subsetsum_shared", "two_layers", "every_layer"])
def test_a_layer_that_would_keep_no_weight_is_refused_with_the_ways_round_it(
        sparsity, options, advice):
    """One small layer (a patch embedding of 3 input channels) whose tensor the sparsity leaves
    empty: the refusal offers leaving it out, and shared=False where its shared u is the tensor
    and unsharing it keeps weights, not only a lower sparsity for the whole model."""
    model = nn.Sequential(nn.Conv2d(3, 16, 1), nn.Linear(64, 200), nn.Linear(200, 10), nn.ReLU())
    with pytest.raises(ValueError, match=rf"^cannot convert module '0': .*{advice}$"):
        convert(model, sparsity=sparsity, **options)
    assert type(model[0]) is nn.Conv2d


@pytest.mark.parametrize("model,sparsity,refusal", [
    (nn.Sequential(nn.Linear(4, 5), nn.Linear(64, 64), nn.Linear(5, 2)), 0.98,
     r"'2': sparsity 0\.98 keeps no weight of a tensor with 10 entries; use at most 0\.9, leave "
     r"the 2 layers that keep none out \(exclude=\['0', '2'\]\)"),
    (nn.Sequential(nn.MultiheadAttention(8, 2, kdim=2, vdim=1)), 0.97,
     r"'0': sparsity 0\.97 keeps no weight of a tensor with 8 entries; use at most 0\.875"),
], ids=["later_layer", "attention_v"])
def test_a_refusal_to_keep_no_weight_names_the_lowest_limit_and_builds_no_layer(
        monkeypatch, model, sparsity, refusal):
    """Layers whose tensor the sparsity leaves empty: the refusal's "use at most" was the first
    refused layer's, or its first refused tensor's (0.95 for '0', at which '2' keeps none
    still; 0.9375 for the attention's k of kdim 2, checked before its v of vdim 1), and every
    other layer was built for real before it (a large model's memory, thrown away). It names
    the limit at which every layer keeps a weight, of the smallest tensor among them, and
    builds layers on the meta device only."""
    from lotterynet.convert_rules import Convertible

    devices = set()
    build = Convertible.build

    def recorded_build(self, *args, **kwargs):
        layer = build(self, *args, **kwargs)
        devices.add(next(layer.parameters()).device.type)
        return layer

    monkeypatch.setattr(Convertible, "build", recorded_build)
    with pytest.raises(ValueError, match=rf"^cannot convert module {refusal}$"):
        convert(model, sparsity=sparsity)
    assert devices == {"meta"}


def test_a_layer_refused_while_its_sparsity_limit_is_sought_is_named():
    """A layer the sparsity keeps no weight of is built again at sparsity 0 to find the limit;
    an attention of ReLU subset-sum projections is refused there, which named no layer
    ('attention projections must be single linear maps; ...'): the refusal names it, as every
    other refusal of a layer does."""
    with pytest.raises(ValueError, match=r"^cannot convert module '0': attention projections "
                                         r"must be single linear maps"):
        convert(nn.Sequential(nn.MultiheadAttention(8, 2, kdim=2, vdim=1)), sparsity=0.999,
                structure="subsetsum")


def test_attentions_of_relu_subset_sum_projections_are_named_at_once_with_the_calls_that_work():
    """An attention's projections must be single linear maps: a model of several (an
    nn.TransformerEncoder, torchvision's ViT) converted with ReLU subset-sum was refused naming
    the first attention only, and told to use dense or activation='identity' for the model
    (QA). All are named at once, with the include and exclude that convert them apart, as the
    refusal of a layer whose weight its parent reads does; converted as it says, the model
    runs, its attentions' projections identity, its feed-forward layers ReLU."""
    def encoder():
        return nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16, batch_first=True), 2,
                                     enable_nested_tensor=False)
    patterns = ["layers.*.self_attn"]
    with pytest.raises(ValueError, match=re.escape(
            "cannot convert module 'layers.0.self_attn' (and 1 other attention): attention "
            "projections must be single linear maps, and a 'subsetsum' projection's weight with "
            "activation='relu' is [P, 2N] over [relu(x), relu(-x)], not [out, in]: convert "
            f"them with activation='identity', in a call of their own (include={patterns}), "
            f"and leave them out of this one (exclude={patterns})")):
        convert(encoder(), sparsity=0.5, structure="subsetsum")
    model = convert(encoder(), sparsity=0.5, structure="subsetsum", exclude=patterns)
    convert(model, sparsity=0.5, structure="subsetsum", activation="identity", include=patterns)
    assert model.layers[1].self_attn.q_proj.structure.activation == "identity"
    assert model.layers[1].linear1.structure.activation == "relu"
    assert model(torch.randn(2, 3, 8)).shape == (2, 3, 8)


def test_hooks_on_a_replaced_layer_are_the_new_layers():
    """Forward (pre) and backward hooks see the subnet layer's calls, and the handles their
    registration returned remove them from it."""
    model = small_model()
    seen = []
    pre = model[0].register_forward_pre_hook(lambda m, args: seen.append(("pre", m)))
    model[0].register_forward_hook(lambda m, args, out: seen.append(("out", m, out)))
    model[4].register_forward_hook(lambda m, args, kwargs, out: out * 0, with_kwargs=True)
    model[4].register_full_backward_hook(lambda m, gin, gout: seen.append(("back", m)))
    convert(model, sparsity=0.5)
    x = torch.randn(2, 3, 6, 6)
    out = model(x)
    assert [s[:2] for s in seen] == [("pre", model[0]), ("out", model[0])]
    assert torch.equal(seen[1][2], model[0](x)) and not out.any()  # the hook's output is used
    out.sum().backward()
    assert seen[-1] == ("back", model[4])
    pre.remove()
    seen.clear()
    model(x)
    assert [s[0] for s in seen] == ["out"]


@pytest.mark.filterwarnings("ignore:`torch.nn.utils.weight_norm` is deprecated")
@pytest.mark.parametrize("reparametrise,words", [
    (lambda m: nn.utils.weight_norm(m), "a WeightNorm .*remove_weight_norm"),
    (lambda m: nn.utils.parametrizations.weight_norm(m),
     "parametrizations of weight.*remove_parametrizations"),
    (lambda m: nn.utils.spectral_norm(m), "SpectralNorm.*remove_spectral_norm"),
    (lambda m: m._register_state_dict_hook(lambda *a: None), "state dict hooks"),
    (lambda m: nn.utils.prune.l1_unstructured(m, "weight", amount=0.5),
     r"a torch\.nn\.utils\.prune mask \(weight_mask\).*"
     r"torch\.nn\.utils\.prune\.remove\(module, 'weight'\)")])
def test_hooks_written_for_the_replaced_parameters_are_refused(reparametrise, words):
    model = small_model()
    reparametrise(model[4])
    with pytest.raises(ValueError, match=f"module '4' has .*{words}"):
        convert(model, sparsity=0.5)
    assert type(model[0]) is nn.Conv2d and isinstance(model[4], nn.Linear)


@pytest.mark.parametrize("option, words", [
    (dict(dtype=torch.float64), "convert takes no dtype: each subnet layer takes the dtype of "
                                "the layer it replaces"),
    (dict(device="meta"), "convert takes no device: each subnet layer takes the device of"),
    (dict(pair=3), "convert: unknown option 'pair'; the layer options are init_kwargs, pairs, "),
    (dict(pairs=3), "pairs=3 is not an option of structure 'dense' (it configures dacunha, "
                    "fixedsize, malach, orseau, subsetsum); drop it or choose one of those"),
    (dict(pairs=5, activation="relu", shared=False, hidden=7),  # (at their defaults: taken)
     "shared=False is not an option of structure 'dense' (it configures fixedsize, subsetsum)"),
    (dict(structure="subsetsum", shared=False, hidden=7),
     "hidden=7 is not an option of structure 'subsetsum' (it configures malach, orseau)"),
])
def test_an_option_no_layer_takes_is_refused(option, words):
    """dtype / device were passed to the layers and then overridden by the replaced layer's
    (later a JSON error at save_ticket, or NotImplementedError on the meta device); a structure
    option that the structure does not read was ignored (every layer dense, unsaid)."""
    model = small_model()
    with pytest.raises(ValueError, match=re.escape(words)):
        convert(model, sparsity=0.5, **option)
    assert type(model[0]) is nn.Conv2d and isinstance(model[4], nn.Linear)


@pytest.mark.parametrize("seed", [None, "0", 1.0])
def test_convert_needs_an_integer_seed(seed):
    """Its layers' seeds derive from it: None would hash to one fixed model, unlike a layer's
    seed=None (torch's global generator)."""
    with pytest.raises(TypeError, match=f"seed must be an integer, got {seed!r}"):
        convert(nn.Linear(4, 4), sparsity=0.5, seed=seed)


def test_convert_draws_each_structures_own_init_by_default():
    """As a subnet layer built directly: malach's U[-1, 1], not Kaiming normal."""
    converted = convert(nn.Sequential(nn.Linear(40, 30)), sparsity=0.5, structure="malach",
                        seed=0)[0]
    direct = ln.SubnetLinear(40, 30, structure="malach", seed=0)
    for name in ("u", "v"):
        weight = getattr(converted.structure, name).weight
        assert weight.abs().max() <= 1 and weight.abs().max() > 0.95, name
        assert weight.abs().max() == pytest.approx(
            float(getattr(direct.structure, name).weight.abs().max()), abs=0.05)


def test_a_channels_last_model_keeps_its_layout():
    """A model moved to channels_last before convert() keeps it: its convolutions' frozen
    weights and scores were contiguous, so the converted model was not the one that converting
    first, then moving, makes (another convolution kernel: other outputs, and slower)."""
    def make():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3), nn.Flatten(1),
                             nn.Linear(4 * 6 * 6, 2))

    after = convert(make(), sparsity=0.5, seed=0).to(memory_format=torch.channels_last)
    before = convert(make().to(memory_format=torch.channels_last), sparsity=0.5, seed=0)
    for name, p in before.named_parameters():
        assert p.is_contiguous(memory_format=torch.channels_last) == \
            after.get_parameter(name).is_contiguous(memory_format=torch.channels_last), name
    x = torch.randn(2, 3, 10, 10).to(memory_format=torch.channels_last)
    assert torch.equal(before(x), after(x))


@pytest.mark.parametrize("channels_last", [True, False], ids=["channels_last", "contiguous"])
def test_kernels_with_a_size_1_dimension_keep_their_layout(tmp_path, channels_last):
    """A 1x1 kernel's weight, or one of 1 input channel, is ``is_contiguous`` in both formats:
    convert took such a channels_last weight for a contiguous one and made its frozen weights
    and scores contiguous, where a ticket (reading the exact strides) took them for channels
    last. One rule (``convert.laid_out``): each keeps the plain model's layout through convert,
    a ticket's reload (bit for bit) and export (the layout the subnet layer computes with)."""
    from lotterynet.convert import laid_out

    def make(laid=channels_last):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 6, 1), nn.ReLU(),
                              nn.Conv2d(6, 2, 3))
        return model.to(memory_format=torch.channels_last) if laid else model

    plain = make()
    strides = {name: p.stride() for name, p in plain.named_parameters()}
    assert [laid_out(plain[i].weight) for i in (0, 2, 4)] == [channels_last] * 3
    model = convert(plain, sparsity=0.5, seed=0).eval()
    for i in (0, 2, 4):
        frozen = model[i].structure.weight
        assert frozen.weight.stride() == frozen.scores.stride() == strides[f"{i}.weight"]
    x = torch.randn(2, 1, 9, 9)
    x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    with torch.no_grad():
        out = model(x)
    ln.save_ticket(model, tmp_path / "t.ticket")
    loaded = ln.load_ticket(tmp_path / "t.ticket", model=make(laid=False)).eval()
    for name, value in model.state_dict().items():
        assert loaded.state_dict()[name].stride() == value.stride(), name
        if not name.endswith("scores"):  # (the ticket holds the masks: 0/1 scores)
            assert torch.equal(loaded.state_dict()[name], value), name
    for i in (0, 2, 4):
        assert torch.equal(loaded[i].mask()["weight"], model[i].mask()["weight"])
    with torch.no_grad():
        assert torch.equal(loaded(x), out)
    for sparse in (False, True):
        exported = ln.export(model, sparse=sparse)
        for i in (0, 2, 4):
            weight = exported[i].sparse_weight() if sparse else exported[i].weight
            assert weight.stride() == model[i].weight.stride()
            assert torch.equal(weight, model[i].weight)
        with torch.no_grad():
            assert torch.equal(exported(x), out)


class UnknownConv2d(nn.Conv2d):
    """A subclass of a convertible layer that convert does not know (it may compute something
    else)."""


def test_layers_of_subclasses_convert_does_not_take_are_named_all_together():
    """Every selected layer of a convertible type's subclass (timm's Conv2dSameExport, one of
    the test's own) is named in one refusal, with an exclude= that takes them all; the first
    alone was named (exclude=['0']), then the next, one refusal at a time."""
    from timm.layers.conv2d_same import Conv2dSameExport

    def make(n):
        return nn.Sequential(Conv2dSameExport(2, 2, 1), UnknownConv2d(2, 2, 1),
                             *(Conv2dSameExport(2, 2, 1) for _ in range(n - 2)),
                             nn.Conv2d(2, 2, 1))

    model = make(2)
    with pytest.raises(ValueError, match=re.escape(
            "2 modules, such as '0' (a timm.layers.conv2d_same.Conv2dSameExport), are of types "
            "Conv2dSameExport, UnknownConv2d, each a subclass of a convertible layer "
            "(known: ") + ".* that may "
            "compute something else; exclude them \\(exclude=\\['0', '1'\\]\\) or, for each type "
            "that computes what its base does, register that rule for it before converting "
            "\\(the first: lotterynet.convert_rules.CONVERTIBLE.register\\("
            "'timm.layers.conv2d_same.Conv2dSameExport'\\)\\(lotterynet.convert_rules."
            "CONVERTIBLE.get\\('torch.nn.modules.conv.Conv2d'\\)\\)\\)$"):
        convert(model, sparsity=0.5)
    assert type(model[2]) is nn.Conv2d  # (the refusal changed nothing)
    assert isinstance(convert(model, sparsity=0.5, exclude=["0", "1"])[2], ln.SubnetConv2d)
    model = make(5)
    with pytest.raises(ValueError) as refused:
        convert(model, sparsity=0.5)
    exclude = re.search(r"\(exclude=(.*)\) or, for each", str(refused.value))[1]
    assert str(refused.value).startswith("5 modules, such as '0'")
    assert eval(exclude, {"model": model}) == ["0", "1", "2", "3", "4"]


def test_a_subclass_registered_as_the_refusal_says_converts_as_its_base(monkeypatch):
    """The refusal of a subclass without a rule said "register the type in
    lotterynet.convert.CONVERTIBLE", not how: it names the call that gives it its base's rule,
    for a subclass that computes what its base does; run as written, the layer converts and
    computes what the base's subnet layer computes."""
    from lotterynet.convert_rules import CONVERTIBLE

    monkeypatch.setattr(CONVERTIBLE, "_entries", dict(CONVERTIBLE._entries))  # (undone after)
    with pytest.raises(UnconvertibleLayers) as refused:
        convert(nn.Sequential(UnknownConv2d(3, 4, 3)), sparsity=0.5, seed=0)
    call = str(refused.value).split("register that rule for it before converting: ")[1]
    assert call == ("lotterynet.convert_rules.CONVERTIBLE.register('test_convert.UnknownConv2d')"
                    "(lotterynet.convert_rules.CONVERTIBLE.get('torch.nn.modules.conv.Conv2d'))")
    eval(call, {"lotterynet": ln})
    model = convert(nn.Sequential(UnknownConv2d(3, 4, 3)), sparsity=0.5, seed=0)
    base = convert(nn.Sequential(nn.Conv2d(3, 4, 3)), sparsity=0.5, seed=0)
    assert type(model[0]) is ln.SubnetConv2d
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(model(x), base(x))


def test_the_refusal_carries_the_exclude_that_leaves_out_exactly_those_layers():
    """``UnconvertibleLayers.exclude``: the call's patterns and, per layer, its name with the
    block numbers as ``*`` where that covers no other module (``*.std``), else the name itself
    (``*.0`` would cover ``3.0``, a plain Conv2d); convert with it converts every other layer."""
    def make():
        blocks = [nn.ModuleDict({"std": UnknownConv2d(2, 2, 1), "fc": nn.Conv2d(2, 2, 1)})
                  for _ in range(2)]
        return nn.Sequential(*blocks, nn.Sequential(UnknownConv2d(2, 2, 1)),
                             nn.Sequential(nn.Conv2d(2, 2, 1)))

    with pytest.raises(UnconvertibleLayers) as refused:
        convert(make(), sparsity=0.5, exclude=["0.fc"])
    assert refused.value.exclude == ["0.fc", "*.std", "2.0"]
    model = convert(make(), sparsity=0.5, exclude=refused.value.exclude)
    assert [n for n, m in model.named_modules() if isinstance(m, ln.SubnetConv2d)] == \
        ["1.fc", "3.0"]


def test_a_compiled_model_is_converted_as_the_module_it_runs(tmp_path):
    """``convert(torch.compile(model))`` converts ``model`` as ``convert(model)`` does and
    returns the compiled model: its layers were named ``_orig_mod.…`` (other seeds, so other
    frozen weights; ``exclude=["2"]`` refused as naming no module) and the call was recorded on
    the wrapper, which a ticket does not read, so the ticket saved had no convert() call and
    did not load."""
    def make():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))

    plain = convert(make(), sparsity=0.5, seed=3, exclude=["2"])
    compiled = torch.compile(make())
    assert convert(compiled, sparsity=0.5, seed=3, exclude=["2"]) is compiled
    model = compiled._orig_mod
    assert isinstance(model[0], ln.SubnetLinear) and type(model[2]) is nn.Linear
    assert torch.equal(model[0].structure.weight.weight, plain[0].structure.weight.weight)
    ln.save_ticket(compiled, tmp_path / "t.ticket")
    loaded = ln.load_ticket(tmp_path / "t.ticket", model=make())
    x = torch.randn(2, 6)
    assert torch.equal(loaded.eval()(x), model.eval()(x))


@pytest.mark.parametrize("leaf_modules", [None, list(ln.SUBNET_MODULES)])
def test_a_converted_model_traces_with_fx_its_subnet_layers_as_leaves(leaf_modules):
    """torchvision's feature extractor and torch.fx.symbolic_trace over a converted model: its
    subnet layers' mask selection is not symbolically traceable, so FX refused the model
    ("symbolically traced variables cannot be used as inputs to control flow") unless told to
    take them as leaf modules, which a plain model's nn.Linear / nn.MultiheadAttention are
    (QA: symbolic_trace, torch.fx.experimental.optimization.fuse). Each subnet layer's call is
    one node, as a leaf module's, told or not: the extracted features, the logits and the
    traced model's output are the model's, and the traced model trains the scores."""
    from torchvision.models.feature_extraction import create_feature_extractor

    class Attends(nn.Module):
        def __init__(self):
            super().__init__()
            self.attention = nn.MultiheadAttention(8, 2, batch_first=True)

        def forward(self, x):
            x = x.flatten(2).transpose(1, 2)
            return self.attention(x, x, x, need_weights=False)[0].mean(1)

    model = ln.convert(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), Attends(),
                                     nn.Linear(8, 10)), sparsity=0.5, seed=0).eval()
    nodes = {"1": "features", "3": "logits"}
    features = create_feature_extractor(model, nodes,
                                        tracer_kwargs={"leaf_modules": leaf_modules or []})
    traced = torch.fx.symbolic_trace(model)
    assert [n.target for n in traced.graph.nodes if n.op == "call_module"] == \
        ["0", "1", "2.attention", "3"]
    x = torch.randn(2, 3, 8, 8)
    out = features(x)
    assert torch.equal(out["logits"], model(x)) and torch.equal(traced(x), model(x))
    assert torch.equal(out["features"], model[:2](x))
    traced.train()(x).sum().backward()
    assert model[0].structure.weight.scores.grad is not None


@pytest.mark.parametrize("strict", [True, False])
def test_a_dense_state_dict_is_refused_by_a_converted_model_saying_why(strict):
    """A pretrained (dense) state dict loaded into a converted model: strictly it was refused
    as a list of every key missing and unexpected, saying nothing of why; with strict=False
    it loaded what matched (norm statistics, the frozen biases, which save_ticket then
    refused) and silently left the random weights, where its user meant to load pretrained
    ones (QA). Refused either way, in one line naming the first converted layer; a lone
    layer too, and the converted model's own state dict loads."""
    def make():
        return nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2))
    dense = make().state_dict()
    model = ln.convert(make(), sparsity=0.5, seed=0)
    with pytest.raises(RuntimeError, match=r"^SubnetLinear '0' takes no dense weight \(0\.weight, "
                                           r"from a model not converted, .* its frozen weights "
                                           r"are random, drawn from its seed"):
        model.load_state_dict(dense, strict=strict)
    with pytest.raises(RuntimeError, match=r"^SubnetLinear takes no dense weight \(weight, "):
        ln.SubnetLinear(4, 3, seed=0).load_state_dict(nn.Linear(4, 3).state_dict(), strict)
    assert ln.convert(make(), sparsity=0.5, seed=1).load_state_dict(model.state_dict(), strict)


def test_plain_numbers_refuses_what_a_ticket_cannot_give_back_and_makes_numbers_plain():
    """A namedtuple (a list in the ticket's JSON, refused by a weights_only checkpoint), a set,
    a dict with a key that is not a string, or another object is refused, naming the argument:
    the namedtuple was kept, so its model built and saved its ticket, which did not load
    ("'list' object has no attribute ..."). What to pass fits the value: a tensor, an array, a
    path or a dtype was told "pass a name the model looks it up by" (as a class is), a tensor
    on several lines. NaN or infinity (which a ticket's JSON cannot hold) is refused too, and a
    number beyond a float's range, written readably (a huge Fraction raised OverflowError from
    deep inside, or ValueError writing its repr). A tuple, a list and torch.Size keep their
    types."""
    import collections
    import datetime
    import fractions
    import pathlib

    import numpy as np

    from lotterynet.convert_checks import plain_numbers

    Shape = collections.namedtuple("Shape", "depth width")
    for value, message in (
            ({"shape": Shape(2, 3)}, r"argument shape=Shape\(depth=2, width=3\) is a namedtuple "
                                     r"\(Shape\), .*: pass a tuple or a dict of its fields"),
            ({"kw": {"a": [{1, 2}]}}, r"argument kw\['a'\]\[0\]=\{1, 2\} is of type set.* pass a "
                                      r"list \(numbers, strings,"),
            ({"kw": {1: 2}}, r"argument kw=\{1: 2\} is a dict with the key 1, .*string keys"),
            ({"act": nn.GELU}, r"argument act=<class .*GELU'> is of type type, .*: pass a name"),
            ({"w": torch.ones(2, 30)}, r"^argument w=tensor\(\[\[1\., 1\., .*\.\.\. is of type "
                                       r"Tensor, .*: pass its \.item\(\) or \.tolist\(\) \("),
            ({"w": np.arange(3)}, r"w=array\(\[0, 1, 2\]\) is of type ndarray, .*\.tolist\(\)"),
            ({"p": pathlib.Path("a")}, r"p=\w*Path\('a'\) is of type \w*Path, .*: pass it as a "
                                       r"string, str\(path\) \("),
            ({"dt": torch.float16}, r"dt=torch.float16 is of type dtype, .*: pass its name, a "
                                    r"string such as 'float32' \("),
            ({"d": datetime.date(2020, 1, 1)}, r"is of type date, .*: pass a plain value \(")):
        with pytest.raises(TypeError, match=message) as refused:
            plain_numbers(value)
        assert "\n" not in str(refused.value)
    with pytest.raises(TypeError, match=r"argument sparsity=\{0.5\} is of type set"):
        convert(nn.Sequential(nn.Linear(3, 3)), sparsity={0.5})
    with pytest.raises(TypeError, match=r"argument sparsity=tensor\(0.9000\) .*: pass its "
                                        r"\.item\(\)"):
        convert(nn.Sequential(nn.Linear(3, 3)), sparsity=torch.tensor(0.9))
    made = plain_numbers({"sizes": (np.int64(3), torch.Size([4]), [fractions.Fraction(1, 2)]),
                          "flags": [np.bool_(True), None, np.str_("x")]})
    assert made == {"sizes": (3, torch.Size([4]), [0.5]), "flags": [True, None, "x"]}
    assert type(made["sizes"][0]) is int and type(made["sizes"][1]) is torch.Size
    assert [type(v) for v in made["flags"]] == [bool, type(None), str]
    with pytest.raises(ValueError, match=r"^argument kw\['a'\]\[1\]=nan is NaN or infinity"):
        plain_numbers({"kw": {"a": [1.0, np.float32("nan")]}})
    for huge, shown in ((fractions.Fraction(-10**400, 3), r"-3\.333e\+399"),
                        (fractions.Fraction(10**5000), r"1e\+5000")):  # (repr: past 4300 digits)
        with pytest.raises(ValueError, match=rf"^argument w\[0\]={shown} \(a Fraction\) is "
                                             rf"beyond a float's range \(±1\.798e\+308\), .*: "
                                             rf"pass a number within it$"):
            plain_numbers({"w": [huge]})
    with pytest.raises(ValueError, match=r"^argument sparsity=1e\+400 \(a Fraction\) is beyond"):
        convert(nn.Sequential(nn.Linear(3, 3)), sparsity=fractions.Fraction(10**400))


def test_a_state_dict_that_changes_a_layers_sparsity_warns_once_naming_it():
    def net(sparsity):
        return convert(nn.Sequential(nn.Linear(20, 10), nn.ReLU(), nn.Linear(10, 3)),
                       sparsity=sparsity, seed=0)
    a, b = net(0.5), net(0.9)
    with pytest.warns(UserWarning) as caught:
        b.load_state_dict(a.state_dict())
    assert [str(w.message) for w in caught] == [
        "load_state_dict: the state dict's kept counts (k) change the sparsity of layer '0' from "
        "0.9 to 0.5 and of 1 other layer: restored, as a resume needs; to keep the model's "
        "sparsity, load the state dict of a model built with it"]
    assert b[0].sparsity == 0.5  # (restored, not refused)
    # a resume (the same sparsity), a k set since (global_topk) restored, build_model's models,
    # a converted submodule loaded through its parent: silent where k is the model's own
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        net(0.5).load_state_dict(a.state_dict())
        ln.global_topk(b, 0.7)
        b.load_state_dict(a.state_dict())
        build_model("fc2", sparsity=0.5, seed=0).load_state_dict(
            build_model("fc2", sparsity=0.5, seed=1).state_dict())
    with pytest.warns(UserWarning, match=r"layer 'body\.0' from 0\.9 to 0\.5 and of 1"):
        nn.ModuleDict({"body": net(0.9)}).load_state_dict({f"body.{k}": v for k, v in
                                                           a.state_dict().items()})
    with pytest.warns(UserWarning, match=r"sparsity of layer '\w+' from 0\.9 to 0\.5 and of"):
        build_model("fc2", sparsity=0.9).load_state_dict(build_model("fc2", sparsity=0.5)
                                                         .state_dict())


def test_a_sparsity_change_warns_once_where_convert_ran_on_a_submodule_and_its_parent():
    def net(sparsity):  # (both convert calls register the load_state_dict hook)
        model = nn.Sequential(nn.Sequential(nn.Linear(20, 10), nn.ReLU()), nn.Linear(10, 3))
        convert(model[0], sparsity=sparsity, seed=0)
        return convert(model, sparsity=sparsity, seed=0)
    b = net(0.9)
    with pytest.warns(UserWarning) as caught:
        b.load_state_dict(net(0.5).state_dict())
    assert [str(w.message) for w in caught] == [
        "load_state_dict: the state dict's kept counts (k) change the sparsity of layer '0.0' "
        "from 0.9 to 0.5 and of 1 other layer: restored, as a resume needs; to keep the model's "
        "sparsity, load the state dict of a model built with it"]
    with pytest.warns(UserWarning, match=r"layer '0' from 0\.5 to 0\.9: restored"):
        net(0.5)[0].load_state_dict(net(0.9)[0].state_dict())  # (the submodule alone warns)


def test_a_load_warns_once_while_another_thread_loads():
    """The layers checked in a load were kept in one module-wide slot, which another thread's
    load replaced in the middle of this one (here: between the parent's hook and its converted
    submodule's): the submodule's layers were checked again, and the load warned twice."""
    def net(sparsity):  # (both convert calls register the load_state_dict hook)
        model = nn.Sequential(nn.Identity(), nn.Sequential(nn.Linear(20, 10), nn.ReLU()),
                              nn.Linear(10, 3))
        convert(model[1], sparsity=sparsity, seed=0)
        return convert(model, sparsity=sparsity, seed=0)
    other = convert(nn.Sequential(nn.Linear(4, 3)), sparsity=0.5, seed=0)

    def load_in_another_thread(*args):
        thread = threading.Thread(target=other.load_state_dict, args=(other.state_dict(),))
        thread.start()
        thread.join()
    b = net(0.9)
    b[0].register_load_state_dict_pre_hook(load_in_another_thread)
    with pytest.warns(UserWarning) as caught:
        b.load_state_dict(net(0.5).state_dict())
    assert [str(w.message) for w in caught] == [
        "load_state_dict: the state dict's kept counts (k) change the sparsity of layer '1.0' "
        "from 0.9 to 0.5 and of 1 other layer: restored, as a resume needs; to keep the model's "
        "sparsity, load the state dict of a model built with it"]


def test_a_tensor_that_torch_does_not_load_for_its_shape_is_not_named_as_changing_sparsity():
    def net(sparsity, classes):
        return convert(nn.Sequential(nn.Linear(20, 10), nn.ReLU(), nn.Linear(10, classes)),
                       sparsity=sparsity, seed=0)
    with pytest.warns(UserWarning) as caught, \
            pytest.raises(RuntimeError, match=r"size mismatch for 2\.structure\.weight\.weight"):
        net(0.9, 3).load_state_dict(net(0.5, 4).state_dict(), strict=False)
    assert [str(w.message) for w in caught] == [
        "load_state_dict: the state dict's kept counts (k) change the sparsity of layer '0' from "
        "0.9 to 0.5: restored, as a resume needs; to keep the model's sparsity, load the state "
        "dict of a model built with it"]  # (not "and of 1 other layer": '2' is not loaded)
    with warnings.catch_warnings():  # (was: "... of layer '' from 0.9 to 0: ...")
        warnings.simplefilter("error")
        with pytest.raises(RuntimeError, match="size mismatch for structure.weight.weight"):
            convert(nn.Linear(4, 3), sparsity=0.9).load_state_dict(
                convert(nn.Linear(8, 3), sparsity=0.5).state_dict(), strict=False)


def sparsities(model):
    return [m.sparsity for m in model.modules() if isinstance(m, ln.SubnetLinear)]


def test_a_model_of_subnet_layers_built_by_hand_warns_once_of_a_sparsity_change():
    """Only convert's and build_model's models held the loaded-k hook: a model of subnet
    layers built by hand (or attention) loaded another sparsity's state dict silently. Each
    layer holds it now; the load warns once, naming the first layer it changes, as it does
    for sibling submodules converted one by one (which warned once each)."""
    def by_hand(sparsity):
        torch.manual_seed(0)
        return nn.Sequential(ln.SubnetConv2d(1, 2, 3, sparsity=sparsity), nn.Flatten(),
                             ln.SubnetLinear(8, 4, sparsity=sparsity), nn.Unflatten(1, (1, 4)),
                             ln.SubnetMultiheadAttention(4, 2, sparsity=sparsity))

    def siblings(sparsity):
        model = nn.Sequential(nn.Sequential(nn.Linear(6, 5), nn.ReLU()),
                              nn.Sequential(nn.Linear(5, 3)))
        for block in model:
            convert(block, sparsity=sparsity, seed=0)
        return model
    for make, first, ours, theirs in ((by_hand, "0", 0.5, 0.9), (siblings, "0.0", 0.9, 0.5)):
        model, source = make(ours), make(theirs)
        with pytest.warns(UserWarning) as caught:
            model.load_state_dict(source.state_dict())
        loaded = model.get_submodule(first).sparsity  # (0.9 of the convolution's 18: 0.8889)
        assert [str(w.message) for w in caught] == [
            f"load_state_dict: the state dict's kept counts (k) change the sparsity of layer "
            f"{first!r} from {ours} to {loaded:.4g}: restored, as a resume needs; to keep the "
            f"model's sparsity, load the state dict of a model built with it"]
        assert sparsities(model) == sparsities(source) != sparsities(make(ours))  # (restored)
        with warnings.catch_warnings():  # (a resume: the same sparsity)
            warnings.simplefilter("error")
            make(ours).load_state_dict(make(ours).state_dict())
    attention = ln.SubnetMultiheadAttention(4, 2, sparsity=0.5, seed=0)
    with pytest.warns(UserWarning, match=r"sparsity of the layer from 0\.5 to 0\.875: "
                                         r"restored"):  # (one layer: not 'and of 4 other')
        attention.load_state_dict(ln.SubnetMultiheadAttention(4, 2, sparsity=0.9).state_dict())


def test_the_sparsity_change_warning_points_at_the_users_load_state_dict_call():
    def net(sparsity, depth):  # (torch's load recurses once per level)
        model = convert(nn.Linear(4, 3), sparsity=sparsity, seed=0)
        for _ in range(depth):
            model = nn.Sequential(model)
        return model
    for depth in (0, 3):
        model, state = net(0.9, depth), net(0.5, depth).state_dict()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            line = inspect.currentframe().f_lineno + 1
            model.load_state_dict(state)
        assert [(w.filename, w.lineno) for w in caught] == [(__file__, line)]


@pytest.mark.parametrize("spec, line", [
    (dict(model_name="resnet10t", sparsty=0.5), "unknown option 'sparsty' of model 'timm'; "),
    (dict(model="resnet10t"), "unknown option 'model' of model 'timm'; "),
    ({}, "model 'timm' needs the option 'model_name'; its options: "),
])
def test_a_timm_spec_with_a_bad_key_is_refused_naming_it_and_the_specs_keys(spec, line):
    with pytest.raises(ValueError) as error:
        ln.EdgePopupModule({"name": "timm", **spec})
    assert str(error.value).startswith(line)
    assert str(error.value).endswith("model_name, in_chans, num_classes, img_size, model_kwargs, "
                                     "sparsity, seed, init, structure, include, exclude, bias, "
                                     "batchnorm, others, init_kwargs, pairs, activation, shared, "
                                     "hidden, kept, ties, fan_in, score_init")


@pytest.mark.parametrize("option, words", [
    (dict(sparsity=1.0), "sparsity is the fraction of weights pruned and must be in [0, 1), got "
                         "1.0"),
    (dict(structure="bogus"), "unknown structure 'bogus'; valid choices: dacunha, dense, "
                              "fixedsize, malach, orseau, subsetsum"),
    (dict(structure="subsetsum", pairs=0), "pairs must be a positive integer, got 0"),
    (dict(kept="x"), "unknown kept rule 'x'; valid choices: round, floor"),
])
def test_a_bad_argument_of_the_call_is_refused_as_converts_not_a_layers(option, words):
    """convert(net, sparsity=1.0) said "cannot convert module '0': sparsity is the fraction
    ...", blaming the first layer for an argument of the call."""
    model = small_model()
    with pytest.raises(ValueError) as error:
        convert(model, **{"sparsity": 0.5, **option})
    assert str(error.value) == f"convert: {words}"
    assert type(model[0]) is nn.Conv2d


def test_a_layer_its_build_refuses_is_named_with_the_exclude_that_leaves_it_out():
    """A layer whose build refused it (then a convolution of padding_mode='reflect', now a
    hidden width its groups do not divide) was refused without the exclude=[...] that other
    refusals of a layer give; every such layer is counted and left out by it."""
    model = nn.Sequential(nn.Conv2d(3, 6, 3, groups=3), nn.ReLU(),
                          nn.Conv2d(6, 6, 3, groups=3), nn.Flatten(), nn.LazyLinear(2))
    model(torch.randn(1, 3, 8, 8))
    with pytest.raises(ValueError) as error:
        convert(model, sparsity=0.5, structure="malach", hidden=4)
    assert str(error.value) == (
        "cannot convert module '0': hidden=4 must be a multiple of groups=3 (and 1 other layer "
        "refused); leave them out (exclude=['0', '2'])")
    assert type(model[0]) is nn.Conv2d and type(model[4]) is nn.Linear
    convert(model, sparsity=0.5, structure="malach", hidden=4,
            exclude=["0", "2"])  # (what it advises converts the rest)
    assert isinstance(model[4], ln.SubnetLinear)


@pytest.mark.parametrize("mode", ["reflect", "circular", "replicate"])
def test_a_convolution_padded_other_than_with_zeros_converts_and_its_ticket_loads(mode, tmp_path):
    """convert refused nn.Conv2d(..., padding_mode='reflect' / 'circular' / 'replicate'): it
    converts, padding as the layer did (at sparsity 0 a dense layer is the nn.Conv2d of its
    weight and bias), and its ticket loads bit-identical (the load's convert reads the mode)."""
    def model():
        return nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, padding_mode=mode, bias=True),
                             nn.ReLU(), nn.Conv2d(3, 2, 3, padding=1, padding_mode=mode))
    x, plain = torch.randn(2, 2, 5, 5), model()
    dense = convert(model(), sparsity=0.0, bias="frozen", seed=0)
    with torch.no_grad():
        for i in (0, 2):
            plain[i].weight.copy_(dense[i].weight)
            plain[i].bias = dense[i].bias
        assert torch.equal(dense(x), plain(x))
    pruned = convert(model(), sparsity=0.5, structure="subsetsum", seed=1)
    ln.save_ticket(pruned, tmp_path / "m.ticket")
    loaded = ln.load_ticket(tmp_path / "m.ticket", model=model())
    assert loaded[0].padding_mode == mode and torch.equal(loaded(x), pruned(x))


#: timm's convolutions that pad each input TensorFlow's "SAME" way (asymmetric under stride 2)
#: or standardise their weight (and scale it by a gain), or both: the type and its arguments
#: past the channels (a StdConv2dSame of stride 1 pads statically).
TIMM_CONVS = {"Conv2dSame": ("Conv2dSame", dict(kernel_size=3, stride=2, bias=True)),
              "Conv2dSame-dilated": ("Conv2dSame", dict(kernel_size=(3, 2), stride=(2, 1),
                                                        dilation=(1, 2))),
              "StdConv2d": ("StdConv2d", dict(kernel_size=3, stride=2, eps=1e-8)),
              "StdConv2dSame": ("StdConv2dSame", dict(kernel_size=3, stride=2)),
              "StdConv2dSame-static": ("StdConv2dSame", dict(kernel_size=3, bias=True)),
              "ScaledStdConv2d": ("ScaledStdConv2d", dict(kernel_size=3, stride=2, gamma=1.7,
                                                          eps=1e-8)),
              "ScaledStdConv2dSame": ("ScaledStdConv2dSame", dict(kernel_size=3, stride=2,
                                                                  bias=False)),
              "ScaledStdConv2dSame-static": ("ScaledStdConv2dSame", dict(kernel_size=(3, 1)))}


def timm_conv(kind: str) -> nn.Conv2d:
    import timm.layers

    name, kwargs = TIMM_CONVS[kind]
    torch.manual_seed(0)
    layer = getattr(timm.layers, name)(3, 4, dtype=torch.float64, **kwargs)
    if hasattr(layer, "gain"):  # (one per output channel, as training leaves it: not 1s)
        with torch.no_grad():
            layer.gain.uniform_(0.5, 2.0)
    return layer


@pytest.mark.parametrize("kind", TIMM_CONVS)
def test_timms_same_padded_and_standardised_convolutions_compute_what_timm_does(kind):
    """timm's Conv2dSame (TensorFlow's "SAME" padding, per input size) and StdConv2d /
    StdConv2dSame (weight standardisation, with their eps) and ScaledStdConv2d(Same) (scaled by
    their gain and scale) were refused as subclasses that may
    compute something else: converted, each computes what the timm layer computes with the
    subnet's masked weight (float64; odd and even inputs, stride 2), its scores get the
    straight-through gradient of that weight there, and it keeps exactly k weights."""
    layer = convert(timm_conv(kind), sparsity=0.5, seed=0)
    reference = timm_conv(kind)
    assert isinstance(layer, ln.SubnetConv2d)
    with torch.no_grad():
        reference.weight.copy_(layer.weight)
        if reference.bias is not None:
            reference.bias.copy_(layer.bias)
    masked = layer.structure.weight
    assert int(masked.mask().sum()) == ln.kept_count(reference.weight.numel(), 0.5)
    for size in [(7, 9), (8, 8), (5, 6)]:
        x = torch.randn(2, 3, *size, dtype=torch.float64)
        out, expected = layer(x), reference(x)
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
        grad = torch.randn_like(out)
        out.backward(grad)
        expected.backward(grad)
        torch.testing.assert_close(masked.scores.grad, reference.weight.grad * masked.weight
                                   * masked.scores.sign(), rtol=0, atol=1e-12)
        masked.scores.grad = reference.weight.grad = None


def reloaded_from_ticket(model: nn.Module, fresh: nn.Module, path) -> nn.Module:
    """``model``'s ticket saved to ``path`` and loaded into ``fresh`` (in eval mode), every
    tensor of whose state but the scores (the ticket holds the masks: 0/1 scores) is the
    model's."""
    ln.save_ticket(model, path)
    loaded = ln.load_ticket(path, model=fresh).eval()
    for name, value in model.state_dict().items():
        if not name.endswith("scores"):
            assert torch.equal(loaded.state_dict()[name], value), name
    return loaded


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.script is deprecated in 2.x
def test_timms_same_padded_and_standardised_convolutions_reload_and_export(tmp_path):
    """A model of converted Conv2dSame, StdConv2d and StdConv2dSame layers prints what they do,
    reloads bit for bit from its ticket and from its state dict into a freshly converted model,
    keeps channels_last, and exports (SamePad before an unpadded convolution, the standardised
    weight baked in), dense or sparse, to a scripted model that computes the same."""
    from timm.layers import Conv2dSame, StdConv2d, StdConv2dSame

    def make():
        torch.manual_seed(0)
        return nn.Sequential(Conv2dSame(3, 4, 3, stride=2), nn.ReLU(),
                             StdConv2d(4, 5, 3, eps=1e-8), nn.ReLU(),
                             StdConv2dSame(5, 6, 3, stride=2))

    model = convert(make(), sparsity=0.5, seed=0).eval()
    assert [model[i].extra_repr() for i in (0, 2, 4)] == [
        "3, 4, kernel_size=(3, 3), stride=(2, 2), same_pad=True, bias='frozen', "
        "structure='dense', density=0.5",
        "4, 5, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), std_eps=1e-08, bias=False, "
        "structure='dense', density=0.5",
        "5, 6, kernel_size=(3, 3), stride=(2, 2), same_pad=True, std_eps=1e-06, bias=False, "
        "structure='dense', density=0.5"]
    x = torch.randn(2, 3, 9, 10)
    with torch.no_grad():
        out = model(x)
        fresh = convert(make(), sparsity=0.5, seed=0).eval()
        fresh.load_state_dict(model.state_dict())
        assert torch.equal(fresh(x), out)
        laid = convert(make().to(memory_format=torch.channels_last), sparsity=0.5, seed=0).eval()
        laid.load_state_dict(model.state_dict())
        assert laid[0].structure.weight.weight.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(laid(x.contiguous(memory_format=torch.channels_last)), out)
    loaded = reloaded_from_ticket(model, make(), tmp_path / "t.ticket")
    assert repr(loaded) == repr(model)
    with torch.no_grad():
        assert torch.equal(loaded(x), out)
        for sparse in (False, True):
            exported = ln.export(model, sparse=sparse)
            assert [type(m).__name__ for m in exported[0]] == ["SamePad", "Conv2d" if not sparse
                                                               else "SparseConv2d"]
            assert torch.equal(exported(x), out)
            assert torch.equal(torch.jit.script(exported)(x), out)


def put_masked_weights(plain: nn.Module, layers: dict[str, nn.Module]) -> None:
    """Give each layer of ``plain`` named in ``layers`` (the converted model's subnet layers)
    the subnet layer's masked weight and bias: the timm model that computes what it does."""
    for name, layer in layers.items():
        dense = plain.get_submodule(name)
        dense.weight.copy_(layer.weight)
        if dense.bias is not None:
            dense.bias.copy_(layer.bias)


@pytest.mark.parametrize("name, kwargs", [
    ("tf_mobilenetv3_small_minimal_100", {}),  # (Conv2dSame: stem, strided depthwise convs)
    ("resnetv2_50x1_bit", dict(channels=[128] * 4, stem_chs=32))])  # (StdConv2d throughout)
def test_timm_models_of_same_padded_or_standardised_convolutions_convert_and_compute_as_timm(
        name, kwargs):
    """Models that convert refused for their Conv2dSame / StdConv2d layers convert whole and
    compute what the timm model computes with each layer's masked weight and bias put in
    (eval: batch norms as they were, batchnorm='trainable')."""
    plain = timm_model(name, None, **kwargs).eval()
    timm_types = {type(m).__name__ for m in plain.modules()} & {"Conv2dSame", "StdConv2d"}
    assert len(timm_types) == 1
    model = convert(timm_model(name, None, **kwargs).eval(), sparsity=0.5,
                    batchnorm="trainable", seed=0)
    layers = {n: m for n, m in model.named_modules() if isinstance(m, _SubnetLayer)}
    assert not any(isinstance(m, PLAIN) for m in model.modules())
    assert any(layer.same_pad or layer.std_eps for layer in layers.values())
    x = torch.randn(2, 3, 33, 30)
    with torch.no_grad():
        put_masked_weights(plain, layers)
        torch.testing.assert_close(model(x), plain(x))


def test_a_standardised_convolution_takes_a_structure_of_one_weight():
    """A converted StdConv2d standardises the structure's one weight: a structure without one
    (two stages; subset sum under ReLU, over [relu(x), relu(-x)]) is refused naming the layer
    and the exclude that leaves it out; subset sum with identity converts. A subnet layer of
    its own pads TF-"SAME" only unpadded, and takes a number as std_eps."""
    from timm.layers import StdConv2d

    model = nn.Sequential(StdConv2d(2, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3))
    for structure, has in (("malach", "structure='malach'"),
                           ("subsetsum", "structure='subsetsum' with activation='relu'")):
        with pytest.raises(ValueError, match=re.escape(
                f"cannot convert module '0': std_eps (weight standardisation: timm's StdConv2d, "
                f"ScaledStdConv2d) standardises one [out, in, *kernel] weight, which {has} does "
                f"not have: use structure='dense', or subsetsum / fixedsize with "
                f"activation='identity'; leave it out (exclude=['0'])")):
            convert(model, sparsity=0.5, structure=structure)
    assert type(model[0]) is StdConv2d
    convert(model, sparsity=0.5, structure="subsetsum", activation="identity")
    assert model[0].std_eps == 1e-6 and model(torch.randn(1, 2, 7, 7)).shape == (1, 2, 5, 5)
    with pytest.raises(ValueError, match=r"same_pad=True pads each input itself .* padding=1,"):
        ln.SubnetConv2d(2, 4, 3, padding=1, same_pad=True)
    valid = ln.SubnetConv2d(2, 4, 3, stride=2, padding="valid", same_pad=True)  # (padding 0)
    assert valid(torch.randn(1, 2, 8, 8)).shape == (1, 4, 4, 4)
    with pytest.raises(ValueError, match=r"std_eps must be None or a non-negative number, got "
                                         r"'1e-6'"):
        ln.SubnetConv2d(2, 4, 3, std_eps="1e-6")


@pytest.mark.parametrize("others", ["frozen", "trainable"])
def test_a_scaled_standardised_convolution_takes_the_timm_layers_gain_under_others(others):
    """A converted ScaledStdConv2d takes the timm layer's gain as it is (a copy of its values,
    as timm's init or a pretrained model left them: not drawn anew, not shared), with its
    scale, frozen or trainable as ``others`` says, and never frozen as built (no seed draws it:
    a ticket stores it); trainable, it gets the gradient timm's layer gives its gain with the
    masked weight. A subnet layer of its own holds a gain of 1s, frozen, and takes std_scale
    only with std_eps."""
    plain, module = timm_conv("ScaledStdConv2d"), timm_conv("ScaledStdConv2d")
    layer = convert(module, sparsity=0.5, seed=0, others=others)
    assert layer.std_eps == 1e-8 and layer.std_scale == plain.scale == 1.7 * 27 ** -0.5
    assert torch.equal(layer.gain, plain.gain) and layer.gain is not module.gain
    assert layer.gain.requires_grad == (others == "trainable")
    assert "gain" not in layer.frozen_as_built
    assert ln.count_params(layer)["trainable"] == 108 + 4 * (others == "trainable")  # (scores)
    with torch.no_grad():
        plain.weight.copy_(layer.weight)
        plain.bias.copy_(layer.bias)
    x = torch.randn(2, 3, 7, 8, dtype=torch.float64)
    out, expected = layer(x), plain(x)
    grad = torch.randn_like(out)
    out.backward(grad)
    expected.backward(grad)
    if others == "trainable":
        torch.testing.assert_close(layer.gain.grad, plain.gain.grad, rtol=0, atol=1e-12)
    else:
        assert layer.gain.grad is None
    own = ln.SubnetConv2d(3, 4, 3, std_eps=1e-6, std_scale=0.5)
    assert torch.equal(own.gain, torch.ones(4, 1, 1, 1)) and not own.gain.requires_grad
    assert "std_eps=1e-06, std_scale=0.5" in own.extra_repr()
    with pytest.raises(ValueError, match=re.escape(
            "std_scale (scaled weight standardisation: timm's ScaledStdConv2d) must be None or "
            "a finite number, with std_eps, got std_scale=0.5, std_eps=None")):
        ln.SubnetConv2d(3, 4, 3, std_scale=0.5)


def test_a_converted_nfnet_computes_as_timm_reloads_from_its_ticket_and_exports(tmp_path):
    """timm's NFNets (ScaledStdConv2d throughout) converted only with every convolution
    excluded: a small NF-ResNet-26 converts whole and computes what timm's model computes with
    each layer's masked weight and bias put in, its gains (other than timm's 1s here, as
    training leaves them) taken as they are; its ticket stores the gains and reloads the model
    bit for bit into a fresh one (whose gains are 1s), and its dense and sparse exports compute
    the same."""
    def make(gains=False):
        model = timm_model("nf_resnet26", None, channels=[8] * 4, depths=[1] * 4).eval()
        if gains:
            with torch.no_grad():
                for name, p in model.named_parameters():
                    if name.endswith("gain"):
                        p.uniform_(0.5, 2.0)
        return model

    plain = make(gains=True)
    model = convert(copy.deepcopy(plain), sparsity=0.5, seed=0)
    layers = {n: m for n, m in model.named_modules() if isinstance(m, _SubnetLayer)}
    assert sum(getattr(m, "std_scale", None) is not None for m in layers.values()) == 17
    x = torch.randn(2, 3, 32, 30)
    with torch.no_grad():
        put_masked_weights(plain, layers)
        out = model(x)
        torch.testing.assert_close(out, plain(x))
    loaded = reloaded_from_ticket(model, make(), tmp_path / "t.ticket")
    with torch.no_grad():
        assert torch.equal(loaded(x), out)
        for sparse in (False, True):
            exported = ln.export(model, sparse=sparse)
            assert not any(isinstance(m, _SubnetLayer) for m in exported.modules())
            torch.testing.assert_close(exported(x), out)
