"""Tickets of models that were never registered: converted with convert(), loaded onto a fresh
instance of the user's own architecture; and tickets that must be refused."""

import hashlib
import json
import os
import re
import shutil
import struct
import tracemalloc
import warnings
import zlib

import pytest
import timm
import torch
from torch import nn

import lotterynet as ln
from lotterynet import ticket_file
from lotterynet.convert_record import CONVERT_RECORD, CONVERTED_BY
from lotterynet.ticket import load_ticket, save_ticket
from lotterynet.ticket_file import TicketError
from lotterynet.ticket_frozen import frozen_as_built, tensors_digest


class SmallCNN(nn.Module):
    def __init__(self, width=4):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width),
                                      nn.ReLU(), nn.Conv2d(width, 8, 3, stride=2),
                                      nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                      nn.Flatten())
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        return self.head(self.features(x))


class TinyTransformer(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(6, 8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True, add_bias_kv=True)
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        h = self.embed(x)
        h = self.norm(h + self.attn(h, h, h, need_weights=False)[0])
        return self.head(h.mean(1))


def tiny_vit():  # a different torch seed on every call: frozen non-converted values differ
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=16, patch_size=8,
                             depth=1, num_heads=2, embed_dim=16, num_classes=3)


CASES = {
    "cnn-batchnorm": (SmallCNN, torch.randn(4, 3, 8, 8),
                      dict(sparsity=0.6, seed=3, bias="trainable")),
    "cnn-two-calls": (SmallCNN, torch.randn(4, 3, 8, 8), None),
    "attention": (TinyTransformer, torch.randn(2, 5, 6), dict(sparsity=0.5, seed=1)),
    "timm-vit": (tiny_vit, torch.randn(2, 3, 16, 16),
                 dict(sparsity=0.7, seed=2, structure="subsetsum", activation="identity",
                      pairs=2, others="trainable")),
}


def converted(make, options):
    model = make()
    if options is None:  # two calls with different options, one of them on a submodule
        ln.convert(model.features, sparsity=0.5, seed=5, batchnorm="trainable")
        ln.convert(model, sparsity=0.8, seed=6, include=["head"], kept="floor", ties="high")
    else:
        ln.convert(model, **options)
    return model


@pytest.mark.parametrize("frozen", [False, True], ids=["as-trained", "frozen-for-inference"])
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_converted_model_round_trip_is_bit_identical(tmp_path, case, frozen):
    """Saved as trained, or after ``requires_grad_(False)`` (frozen for inference: the
    trained biases, norms and batch norms are still stored, not taken for frozen ones)."""
    make, x, options = case
    model = converted(make, options)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model.train()
    for _ in range(2):
        opt.zero_grad()
        model(x).logsumexp(-1).sum().backward()
        opt.step()
    model.eval()
    if frozen:
        model.requires_grad_(False)
    save_ticket(model, tmp_path / "t.ticket")
    loaded = load_ticket(tmp_path / "t.ticket", model=make()).eval()
    if frozen:  # like the saved model: attention's kernels may differ once nothing needs grad
        loaded.requires_grad_(False)
    assert torch.equal(loaded(x), model(x))
    masks = {n: m.mask() for n, m in model.named_modules() if isinstance(m, ln.MaskedWeight)}
    assert masks and all(torch.equal(loaded.get_submodule(n).mask(), mask)
                         for n, mask in masks.items())
    state = loaded.state_dict()
    assert state.keys() == model.state_dict().keys()
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items()
               if not k.endswith("scores"))
    with pytest.raises(TicketError, match=r"load_ticket\(path, model=MyNet\(\)\)"):
        load_ticket(tmp_path / "t.ticket")


def test_ticket_refuses_a_model_of_another_shape(tmp_path):
    model = ln.convert(SmallCNN(), sparsity=0.5, seed=0)
    save_ticket(model, tmp_path / "t.ticket")
    first = r"mask 'features\.0\.structure\.weight' differs: the ticket has \[4, 3, 3, 3\], "
    with pytest.raises(TicketError, match=first + r"the model \[6, 3, 3, 3\]"):
        load_ticket(tmp_path / "t.ticket", model=SmallCNN(width=6))
    with pytest.raises(TicketError, match=r"the model has no mask 'features\.0\.structure"):
        load_ticket(tmp_path / "t.ticket", model=TinyTransformer())


def test_a_model_that_cannot_be_copied_is_named_not_the_ticket(tmp_path):
    """load_ticket copies your model to the meta device first; a model holding a lock made it
    say "the ticket's model does not build", blaming a sound ticket."""
    import threading

    model = ln.convert(SmallCNN(), sparsity=0.5, seed=0)
    save_ticket(model, tmp_path / "t.ticket")
    fresh = SmallCNN()
    fresh.lock = threading.Lock()
    with pytest.raises(TicketError, match=r"model= SmallCNN cannot be copied \(copy\.deepcopy: "
                                          r"TypeError\(\"cannot pickle '_thread\.lock'"):
        load_ticket(tmp_path / "t.ticket", model=fresh)


def test_a_model_converted_already_is_named_not_the_ticket(tmp_path):
    """load_ticket replays the ticket's convert() calls on model=; a model converted already
    (the one trained, or one converted with another seed) made it say "the ticket's model does
    not build" and advise changing the layers' sparsity."""
    model = ln.convert(SmallCNN(), sparsity=0.5, seed=0)
    save_ticket(model, tmp_path / "t.ticket")
    for converted_already in (model, ln.convert(SmallCNN(), sparsity=0.9, seed=1)):
        with pytest.raises(TicketError, match=r"model= SmallCNN is converted already, .* "
                                              r"pass a fresh, unconverted instance"):
            load_ticket(tmp_path / "t.ticket", model=converted_already)

def test_a_built_model_converted_again_loads_by_path_alone(tmp_path):
    """build_model, then convert() of what the builder left (here timm's head): the path alone
    rebuilds it, the spec's calls made once; before, the load named a missing mask. Built
    with a tuple, which the ticket's spec (JSON) holds as a list: the same spec."""
    def build():
        return ln.models.build_model("timm:resnet10t", in_chans=1, num_classes=3,
                                     sparsity=0.5, exclude=("fc",))

    model = build()
    ln.convert(model, include=["fc"], sparsity=0.9, seed=4)
    save_ticket(model, tmp_path / "t.ticket")
    x = torch.randn(2, 1, 32, 32)
    expected = model.eval()(x)
    for loaded in (load_ticket(tmp_path / "t.ticket"),
                   load_ticket(tmp_path / "t.ticket", model=build())):
        assert torch.equal(loaded.eval()(x), expected)
        assert loaded.fc.structure.weight.kept == model.fc.structure.weight.kept
    save_ticket(loaded, tmp_path / "again.ticket")  # saved again: the same two calls
    assert len(ticket_parts(tmp_path / "again.ticket")[0]["converts"]) == 2


def test_a_module_replaced_after_build_model_is_refused_at_save(tmp_path):
    """A built model whose module was replaced afterwards (timm's reset_classifier, a layer
    assigned), converted or not, is refused by save_ticket in one line saying to make the
    change where the model is built: the ticket rebuilds the model from its spec and the
    recorded convert() calls, which do not hold the replacement. It said that convert's
    selected layers were already converted, or that fc.bias requires grad."""
    def build(classes=3):
        return ln.models.build_model("timm:resnet10t", in_chans=1, num_classes=classes,
                                     sparsity=0.5)

    reset, assigned, plain = build(), build(), build()
    reset.reset_classifier(5)
    ln.convert(reset, include=["fc"], sparsity=0.5, seed=1)
    assigned.fc = ln.convert(nn.Linear(512, 5), sparsity=0.5, seed=1)
    plain.fc = nn.Linear(512, 3)
    for model, what in ((reset, r"the convert\(\) call on the model \(include=\['fc'\]\) "),
                        (assigned, r"the convert\(\) call on module 'fc' "),
                        (plain, r"module 'fc' is not the one the model's spec rebuilds \(the "
                                r"model has a Linear, the spec a SubnetLinear\)")):
        with pytest.raises(ValueError, match=rf"^save_ticket: {what}.* make the change where "
                                             r"the model is built, by build_model's arguments "
                                             r"\(num_classes=\.\.\.\)") as refused:
            save_ticket(model, tmp_path / "t.ticket")
        assert "\n" not in str(refused.value)
        assert not (tmp_path / "t.ticket").exists()
    model = build(classes=5).eval()  # the head built in: saved, rebuilt bit for bit
    save_ticket(model, tmp_path / "t.ticket")
    x = torch.randn(2, 1, 32, 32)
    assert torch.equal(load_ticket(tmp_path / "t.ticket").eval()(x), model(x))


def test_a_model_whose_batch_norms_ddp_synced_saves_as_built(tmp_path):
    """DDP's ``sync_batchnorm`` (Lightning's ``Trainer(sync_batchnorm=True)`` on GPUs, torch's
    ``SyncBatchNorm.convert_sync_batchnorm``) swaps a built model's batch norms for
    SyncBatchNorms holding the same tensors: save_ticket refused it ("module 'bn1' is not the
    one the model's spec rebuilds (the model has a SyncBatchNorm, the spec a BatchNorm2d)"),
    a multi-GPU run's ticket at its end. It saves, loads with the batch norms built, bit for
    bit; a SyncBatchNorm where the spec builds no batch norm is still refused."""
    model = ln.models.build_model("timm:resnet10t", in_chans=1, num_classes=3, sparsity=0.5)
    model(torch.randn(4, 1, 32, 32))  # (running statistics of its own)
    synced = nn.SyncBatchNorm.convert_sync_batchnorm(model).eval()
    assert type(synced.bn1) is nn.SyncBatchNorm
    save_ticket(synced, tmp_path / "t.ticket")
    loaded = load_ticket(tmp_path / "t.ticket").eval()
    x = torch.randn(2, 1, 32, 32)
    assert type(loaded.bn1) is nn.BatchNorm2d and torch.equal(loaded(x), synced(x))
    synced.act1 = nn.SyncBatchNorm(64)
    with pytest.raises(ValueError, match=r"^save_ticket: module 'act1' is not the one the "
                                         r"model's spec rebuilds \(the model has a "
                                         r"SyncBatchNorm, the spec a ReLU\): "):
        save_ticket(synced, tmp_path / "other.ticket")


def test_a_layer_added_or_replaced_after_convert_is_refused_at_save(tmp_path):
    """Your own model, converted, then given a convertible layer that the recorded convert()
    calls reach (timm's reset_classifier: a fresh plain fc; a layer assigned or added): a load
    replays the calls on a fresh instance, converting that layer too, so the ticket loaded into
    no model ("mask 'fc.structure.weight' is not in the ticket"), yet save_ticket wrote it
    without a word. It is refused in one line naming the layer; one the calls leave out saves."""
    reset = ln.convert(timm.create_model("resnet10t", pretrained=False, num_classes=4),
                       sparsity=0.5, seed=0)
    reset.reset_classifier(3)
    replaced, added = (ln.convert(SmallCNN(), sparsity=0.5, seed=0) for _ in range(2))
    replaced.head = nn.Linear(8, 3)
    added.extra = nn.Linear(5, 5)
    for model, name in ((reset, "fc"), (replaced, "head"), (added, "extra")):
        with pytest.raises(ValueError, match=rf"^save_ticket: module '{name}' is not the one a "
                                             r"load of the ticket makes, replaying the convert\(\) "
                                             r"calls \(the model has a Linear, the load a "
                                             r"SubnetLinear\): a convertible layer added or "
                                             r"replaced after convert\(\) .* make the change "
                                             r"before convert\(\)") as refused:
            save_ticket(model, tmp_path / "t.ticket")
        assert "\n" not in str(refused.value)
        assert not (tmp_path / "t.ticket").exists()
    import threading  # (the check replays the calls on a meta-device copy: one that cannot be)

    locked = ln.convert(SmallCNN(), sparsity=0.5, seed=0)
    locked.lock = threading.Lock()
    with pytest.raises(TicketError, match=r"model= SmallCNN cannot be copied \(copy\.deepcopy: "
                                          r".*\), which save_ticket does to check"):
        save_ticket(locked, tmp_path / "t.ticket")
    model = ln.convert(SmallCNN(), sparsity=0.5, seed=0, exclude=["head"])
    model.head = nn.Linear(8, 3)  # left out of the call: a load leaves it plain too
    save_ticket(model, tmp_path / "t.ticket")
    fresh = SmallCNN()
    fresh.head = nn.Linear(8, 3)
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(load_ticket(tmp_path / "t.ticket", model=fresh).eval()(x),
                       model.eval()(x))


def test_a_layer_converted_again_by_a_later_call_loads(tmp_path):
    """Your own model converted, then a layer put in place of one converted (timm's
    reset_classifier) and converted by a call of its own: save_ticket wrote a ticket that no
    load read, as the load's replay of the first call converted the new layer too, and the
    second then had nothing to convert ("the selected layers are already converted"). The
    ticket leaves such a layer out of the earlier calls, so a load into the model with the
    same change is exact."""
    def resnet():
        return timm.create_model("resnet10t", pretrained=False, num_classes=4)

    def reset(model):
        model.reset_classifier(3)
        return model

    def new_head(model):
        model.head = nn.Linear(8, 3)
        return model

    for make, first, change, layer, x in (
            (resnet, None, reset, "fc", torch.randn(2, 3, 32, 32)),
            (SmallCNN, ["head"], new_head, "head", torch.randn(2, 3, 8, 8))):  # (none left)
        model = ln.convert(make(), sparsity=0.5, seed=0, include=first)
        ln.convert(change(model), sparsity=0.7, seed=1, include=[layer])
        save_ticket(model, tmp_path / f"{layer}.ticket")
        same = load_ticket(tmp_path / f"{layer}.ticket", model=change(make()))
        assert torch.equal(same.eval()(x), model.eval()(x))
    with pytest.raises(TicketError, match=r"mask 'fc\.structure\.weight' differs: the ticket "
                                          r"has \[3, 512\], the model \[4, 512\]"):
        load_ticket(tmp_path / "fc.ticket", model=resnet())  # (without the change)


def test_a_call_whose_layers_a_later_call_all_converted_again_still_freezes(tmp_path):
    """The first call froze a LayerNorm (others='frozen') and made non-affine a BatchNorm, and
    its only layer was replaced and converted by a second call: the ticket dropped the first
    call, so a load left the LayerNorm trainable and the BatchNorm affine. The call is kept,
    converting nothing; a ticket of the loaded model loads so too."""
    def make():
        return nn.Sequential(nn.Sequential(nn.LayerNorm(8), nn.BatchNorm1d(8), nn.Linear(8, 4)))

    def change(model):
        model[0][2] = nn.Linear(8, 4)
        return model

    model = ln.convert(make(), sparsity=0.5, seed=0, include=["0"])
    ln.convert(change(model), sparsity=0.5, seed=1, include=["0.2"])
    x = torch.randn(3, 8)
    for i in range(2):
        save_ticket(model, tmp_path / f"{i}.ticket")
        loaded = load_ticket(tmp_path / f"{i}.ticket", model=change(make()))
        assert torch.equal(loaded.eval()(x), model.eval()(x))
        assert not loaded[0][0].weight.requires_grad and loaded[0][1].weight is None
        model = loaded


def test_a_call_in_another_process_comes_after_the_models_recorded_calls(tmp_path):
    """Calls were ordered by a count in the process: a model converted in one (pickled, its
    call at 50) and converted again in another gave the new call a smaller order, so the
    ticket replayed it first, and the first call froze the LayerNorm the second had made
    trainable."""
    def make():
        return nn.Sequential(nn.LayerNorm(8), nn.Linear(8, 8), nn.Linear(8, 4))

    model = ln.convert(make(), sparsity=0.5, seed=0, exclude=["2"])
    for module in model.modules():  # (as a process that made 50 calls before left them)
        for record in module.__dict__.get(CONVERT_RECORD, ()):
            record["order"] = 50
        if CONVERTED_BY in module.__dict__:
            module.__dict__[CONVERTED_BY] = 50
    ln.convert(model, sparsity=0.5, seed=1, include=["0", "2"], others="trainable")
    save_ticket(model, tmp_path / "t.ticket")
    assert load_ticket(tmp_path / "t.ticket", model=make())[0].weight.requires_grad


def test_a_built_model_inside_yours_loads_into_yours(tmp_path):
    """A build_model network held by your module (``nn.Sequential``, EdgePopupModule): the
    builder's convert() calls are made again by your model, not replayed over them (it said
    the layers were already converted), and a spec ticket given a model build_model did not
    make says so (it was "'NoneType' object is not iterable")."""
    from lotterynet.module import EdgePopupModule

    spec = dict(name="timm", model_name="resnet10t", in_chans=1, num_classes=3, sparsity=0.5,
                seed=0)

    def wrapped():
        kwargs = dict(spec)
        return nn.Sequential(ln.models.build_model(kwargs.pop("name"), **kwargs),
                             nn.LogSoftmax(-1))

    x = torch.randn(2, 1, 32, 32)
    for make in (wrapped, lambda: EdgePopupModule(spec)):
        model = make().eval()
        save_ticket(model, tmp_path / "t.ticket")
        assert torch.equal(load_ticket(tmp_path / "t.ticket", model=make()).eval()(x), model(x))
    save_ticket(ln.models.build_model("fc2", width=8, sparsity=0.5, seed=0), tmp_path / "s.ticket")
    with pytest.raises(TicketError, match=r"saved from build_model\('fc2', ...\), which "
                                          r"rebuilds it: load_ticket\(path\) without model="):
        load_ticket(tmp_path / "s.ticket", model=nn.Sequential(nn.Flatten(), nn.Linear(784, 8)))


def test_a_compiled_model_saves_the_ticket_of_the_model_it_runs(tmp_path):
    """``torch.compile(model)``'s ticket is ``model``'s (its tensor names had the wrapper's
    ``_orig_mod.`` prefix: every frozen weight was stored, 30x the size, and the path alone did
    not load it); loading into a compiled model returns it, its module loaded."""
    def build():
        return ln.models.build_model("fc2", width=8, sparsity=0.5, seed=0)

    model = build()
    with torch.no_grad():
        model[1].structure.weight.scores.neg_()  # another mask than a fresh build's
    plain = save_ticket(model, tmp_path / "plain.ticket")
    assert save_ticket(torch.compile(model), tmp_path / "t.ticket") == plain
    assert ln.ticket.frozen_digest(torch.compile(model)) == ln.ticket.frozen_digest(model)
    into = torch.compile(build())
    assert load_ticket(tmp_path / "t.ticket", model=into) is into
    x = torch.randn(2, 1, 28, 28)
    for loaded in (load_ticket(tmp_path / "t.ticket"), into._orig_mod):
        assert torch.equal(loaded.eval()(x), model.eval()(x))


class Scaled(nn.Module):
    """A calibrated output scale kept as extra state."""

    def __init__(self, as_tensor: bool = True):
        super().__init__()
        self.scale, self.as_tensor = 1.0, as_tensor

    def forward(self, x):
        return x * self.scale

    def get_extra_state(self):
        return torch.tensor([self.scale]) if self.as_tensor else {"scale": self.scale}

    def set_extra_state(self, state):
        self.scale = float(state[0])


def test_extra_state_is_restored_and_must_be_a_tensor(tmp_path):
    """A module's extra state (a copy in a state dict) is set as load_state_dict sets it: it
    was stored, then written into the copy and lost. Extra state that is no tensor is refused
    naming it (an AttributeError)."""
    def architecture(as_tensor=True):
        return nn.Sequential(nn.Linear(4, 4), Scaled(as_tensor))

    def make(as_tensor=True):
        return ln.convert(architecture(as_tensor), sparsity=0.5, seed=0)

    model = make()
    model[1].scale = 3.0
    save_ticket(model, tmp_path / "t.ticket")
    loaded = load_ticket(tmp_path / "t.ticket", model=architecture())
    x = torch.randn(2, 4)
    assert loaded[1].scale == 3.0 and torch.equal(loaded(x), model(x))
    with pytest.raises(ValueError, match="state '1._extra_state' is a dict, not a tensor"):
        save_ticket(make(as_tensor=False), tmp_path / "d.ticket")


def test_hand_built_subnet_layers(tmp_path):
    def make(seed):
        return nn.Sequential(ln.SubnetLinear(6, 4, True, seed=seed), nn.LayerNorm(4),
                             ln.SubnetLinear(4, 2, structure="subsetsum", seed=seed))
    model = make(0)
    ln.global_topk(model, 0.5)  # (every tensor keeps some: at 0.7 subset sum's v kept none)
    save_ticket(model, tmp_path / "t.ticket")
    x = torch.randn(3, 6)
    assert torch.equal(load_ticket(tmp_path / "t.ticket", model=make(0))(x), model(x))
    with pytest.raises(TicketError, match="different frozen"):
        load_ticket(tmp_path / "t.ticket", model=make(1))


def train_frozen_weights(model, refreeze):
    """One step of plain SGD on every parameter but the scores (a layer refuses a training
    forward with both unfrozen), frozen ones made trainable; with ``refreeze`` all but the
    scores frozen again after it (as a refusal at save advised: freeze it again)."""
    for name, p in model.named_parameters():
        p.requires_grad_(not name.endswith("scores"))
    model(torch.randn(4, 6)).square().sum().backward()
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p.sub_(0.1 * p.grad)
    if refreeze:
        for name, p in model.named_parameters():
            p.requires_grad_(name.endswith("scores"))


def tiny_mlp():
    return ln.convert(nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)), sparsity=0.5,
                      seed=0)


def hand_built():
    return nn.Sequential(ln.SubnetLinear(6, 8, seed=1), nn.ReLU(),
                         ln.SubnetLinear(8, 3, True, seed=2))


def edit_bias(model):
    with torch.no_grad():
        model[2].bias.add_(1e-3)


def edit_bias_v(model):
    with torch.no_grad():
        model.attn.bias_v.add_(1e-3)


@pytest.mark.parametrize("make,change,first", [
    (tiny_mlp, lambda m: train_frozen_weights(m, refreeze=True), "0.bias"),
    (tiny_mlp, lambda m: train_frozen_weights(m, refreeze=False), "0.bias"),
    (hand_built, edit_bias, "2.bias"),
    (lambda: Unseeded(seed=1), edit_bias_v, "attn.bias_v"),
], ids=["trained-then-frozen-again", "trained", "hand-built-edited-in-place",
        "attention-bias-v-edited-in-place"])
def test_frozen_weights_changed_since_the_model_was_made_are_refused_at_save(tmp_path, make,
                                                                            change, first):
    """A ticket regenerates frozen weights from their seeds, so a model whose frozen weights
    were trained (then frozen again, as a refusal of the thawed weight advised, or not) or
    edited in place is refused at save, naming the first, with what to do, and nothing written
    (was: saved, and its load said "different frozen random weights ... another torch
    version?", the masks lost; a thawed weight was told to freeze it again; an attention's
    ``bias_k`` / ``bias_v`` were not compared at all)."""
    model = make()
    save_ticket(model, tmp_path / "t.ticket")  # as made: saves
    change(model)
    with pytest.raises(ValueError, match=rf"^save_ticket: frozen parameter '{re.escape(first)}' "
                                         r"is no longer what its seed draws \(trained, or "
                                         r"changed in place, since the model was made; .*\).* save "
                                         r"a checkpoint \(model\.state_dict\(\)\) instead"):
        save_ticket(model, tmp_path / "u.ticket")
    assert not (tmp_path / "u.ticket").exists()


@pytest.mark.parametrize("average", ["ModelEmaV3", "AveragedModel"])
def test_a_weight_averaged_copy_of_a_converted_model_is_its_ticket(tmp_path, average):
    """The copy that timm's ``ModelEmaV3`` and torch's ``AveragedModel`` keep of a converted
    model while it trains (as README says) averages the scores and leaves its frozen weights the
    seed's, exactly: it saves as a ticket, which loads into a fresh model computing as it does.
    (timm's ``ModelEmaV2`` rounds them, ``decay * ema + (1 - decay) * model``: no ticket.)"""
    from timm.utils import ModelEmaV3
    from torch.optim.swa_utils import AveragedModel

    torch.manual_seed(0)
    model = ln.convert(SmallCNN(), sparsity=0.5, seed=0)
    copy = ModelEmaV3(model, decay=0.5) if average == "ModelEmaV3" else AveragedModel(model)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    x = torch.randn(4, 3, 8, 8)
    for _ in range(2):
        optimizer.zero_grad()
        model(x).square().sum().backward()
        optimizer.step()
        copy.update(model) if average == "ModelEmaV3" else copy.update_parameters(model)
    averaged = copy.module.eval()
    scores = [m.scores for m in ln.masked_weights(averaged)]
    assert not any(torch.equal(s, m.scores) for s, m in zip(scores, ln.masked_weights(model)))
    save_ticket(averaged, tmp_path / "avg.ticket")
    loaded = load_ticket(tmp_path / "avg.ticket", model=SmallCNN()).eval()
    assert torch.equal(loaded(x), averaged(x))


def test_a_layers_init_kwargs_changed_by_its_caller_afterwards_changes_nothing(tmp_path):
    """A subnet layer keeps a copy of its ``init_kwargs``: it held the caller's dict, so a
    later change to that dict made save_ticket's draw-again differ from the layer's frozen
    weights, and refuse the model as changed since it was made."""
    def made(options):
        return nn.Sequential(ln.SubnetLinear(6, 4, init="hyperbolic", init_kwargs=options,
                                             seed=1))

    options = {"alpha": 0.01, "beta": 1.0}
    model = made(options)
    options["alpha"] = 0.1
    save_ticket(model, tmp_path / "t.ticket")
    x = torch.randn(2, 6)
    assert torch.equal(load_ticket(tmp_path / "t.ticket",
                                   model=made({"alpha": 0.01, "beta": 1.0}))(x), model(x))


class Unseeded(nn.Module):
    def __init__(self, seed=None):
        super().__init__()
        self.fc = ln.SubnetLinear(6, 4, True, sparsity=0.5, seed=seed)
        self.attn = ln.SubnetMultiheadAttention(4, 2, add_bias_kv=True, batch_first=True,
                                                sparsity=0.5, seed=seed)

    def forward(self, x):
        x = self.fc(x)
        return self.attn(x, x, x, need_weights=False)[0]


def test_subnet_layers_made_without_a_seed_store_their_frozen_weights(tmp_path):
    """A subnet layer made without a seed draws its frozen weights from torch's global
    generator, which no load replays: its ticket stores them, so a fresh model loads it (it
    was "different frozen random weights", at load), but not one whose layers are seeded: a
    ticket never replaces what a load regenerates. An older lotterynet's ticket of such layers
    stored none: it still loads where the global generator is replayed, and only there.
    save_ticket warns that the layers made the ticket big, and how to make it small (it was
    silent): their 116 frozen float32 values (fc: 6 x 4 + 4; attn: 4 x (4 x 4 + 4) + 2 x 4)."""
    torch.manual_seed(0)
    model = Unseeded()
    ln.global_topk(model, 0.7)
    with pytest.warns(UserWarning, match=r"save_ticket: 2 subnet layers made without a seed "
                                         r"\('fc', 'attn'\): the ticket stores their frozen "
                                         r"weights, .* 464 of its [\d,]+ bytes; made with a seed "
                                         r".* its ticket holds its 1-bit mask only") as said:
        size = save_ticket(model, tmp_path / "t.ticket")
    assert len(said) == 1 and f"464 of its {size:,} bytes" in str(said[0].message)
    x = torch.randn(2, 3, 6)
    assert torch.equal(load_ticket(tmp_path / "t.ticket", model=Unseeded())(x), model(x))
    with pytest.raises(TicketError, match="stores 'fc.bias', which the model regenerates"):
        load_ticket(tmp_path / "t.ticket", model=Unseeded(seed=1))
    for layer in model.modules():  # as an older lotterynet saved it
        if isinstance(layer, ln.SUBNET_MODULES):
            layer.seeded = True
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # seeded layers: nothing to warn of
        save_ticket(model, tmp_path / "older.ticket")
    torch.manual_seed(0)
    assert torch.equal(load_ticket(tmp_path / "older.ticket", model=Unseeded())(x), model(x))
    with pytest.raises(TicketError, match="different frozen"):
        load_ticket(tmp_path / "older.ticket", model=Unseeded())


def test_subnet_layers_pickled_before_they_recorded_their_seed_save_their_ticket(tmp_path):
    """A model pickled whole (torch.save(model)) by a lotterynet whose subnet layers did not
    record whether they were made with a seed (``layer.seeded``) failed at save_ticket
    (AttributeError: 'seeded'); its layers load as seeded, as that lotterynet's tickets took
    them: the ticket is the one the model saved before it was pickled."""
    model = Unseeded(seed=1)
    ln.global_topk(model, 0.7)
    save_ticket(model, tmp_path / "t.ticket")
    for layer in model.modules():  # as an older lotterynet pickled it
        if isinstance(layer, ln.SUBNET_MODULES):
            del layer.seeded
    torch.save(model, tmp_path / "older.pt")
    older = torch.load(tmp_path / "older.pt", weights_only=False)
    save_ticket(older, tmp_path / "older.ticket")
    assert (tmp_path / "older.ticket").read_bytes() == (tmp_path / "t.ticket").read_bytes()


@pytest.mark.parametrize("which", ["spec", "converted", "seeded-layers"])
def test_a_ticket_cannot_replace_frozen_weights_a_load_regenerates(tmp_path, which):
    """A ticket stores the frozen weights of subnet layers made without a seed, and only those:
    a forged one that stores those of a layer a load regenerates (spec-built, converted or made
    with a seed) is refused (they were set, outside the sha256 check)."""
    make, into = {"spec": (lambda: ln.models.build_model("fc2", width=8, sparsity=0.5, seed=0),
                           lambda: None),
                  "converted": (lambda: ln.convert(nn.Linear(6, 4), sparsity=0.5),
                                lambda: nn.Linear(6, 4)),
                  "seeded-layers": (lambda: Unseeded(seed=1),) * 2}[which]
    model = make()
    save_ticket(model, tmp_path / "t.ticket")
    name, weight = next((n, p) for n, p in model.named_parameters() if not p.requires_grad)
    frozen = frozen_as_built(model, getattr(model, "spec", None)) - {name}
    rest = tensors_digest({n: t for n, t in model.state_dict().items() if n in frozen})
    forged = with_tensors(tmp_path / "t.ticket", tmp_path / "forged.ticket",
                          {name: torch.full_like(weight, 3.0)},
                          lambda header: header.update(frozen_sha256=rest))
    with pytest.raises(TicketError, match=f"stores {re.escape(repr(name))}, which the model "
                                          r"regenerates \(from its spec, a convert\(\) seed or "
                                          r"its layer's own seed\): a ticket may supply the "
                                          "frozen weight only of a subnet layer made without"):
        load_ticket(forged, model=into())


def test_a_layer_used_twice_is_stored_once(tmp_path):
    """A module registered under two names (one layer applied twice) is one mask in the
    ticket; under its second name its frozen random weight, its float scores and its k were
    stored as tensors, and the load wrote the trained scores back over the mask's 0/1."""
    def architecture():
        shared = nn.Linear(4, 4)
        return nn.Sequential(shared, nn.Tanh(), shared, nn.Linear(4, 2))

    model = ln.convert(architecture(), sparsity=0.5, seed=0, bias="trainable")
    model(torch.randn(3, 4)).sum().backward()
    torch.optim.SGD(model.parameters(), lr=0.5).step()
    save_ticket(model, tmp_path / "t.ticket")
    header = ticket_parts(tmp_path / "t.ticket")[0]
    assert list(header["masks"]) == ["0.structure.weight", "3.structure.weight"]
    assert list(header["tensors"]) == ["0.bias", "3.bias"]
    loaded = load_ticket(tmp_path / "t.ticket", model=architecture())
    x = torch.randn(3, 4)
    assert loaded[0] is loaded[2] and torch.equal(loaded(x), model(x))
    scores = loaded[0].structure.weight.scores
    assert torch.equal(scores, loaded[0].mask()["weight"].float())


def test_an_older_ticket_of_a_layer_used_twice_says_to_re_save_it(tmp_path):
    """A ticket an older lotterynet wrote of a layer used twice (its tensors under the second
    name too: bias, frozen weight, scores, k) is refused saying so, not blaming the
    architecture ('the model has no tensor '2.bias' (... another architecture)')."""
    def architecture():
        shared = nn.Linear(4, 4)
        return nn.Sequential(shared, nn.Tanh(), shared, nn.Linear(4, 2))

    model = ln.convert(architecture(), sparsity=0.5, seed=0, bias="trainable")
    save_ticket(model, tmp_path / "t.ticket")
    twice = {"2.bias": model[0].bias, "2.structure.weight.weight": model[0].structure.weight.weight,
             "2.structure.weight.scores": model[0].structure.weight.scores,
             "2.structure.weight._extra_state": model[0].structure.weight.get_extra_state()}
    older = with_tensors(tmp_path / "t.ticket", tmp_path / "older.ticket", twice,
                         lambda header: header.pop("channels_last"))
    with pytest.raises(TicketError, match=r"stores '2\.bias', a second name of a layer or "
                                          r"tensor the model uses twice, as an older lotterynet "
                                          r"did .*: re-save the ticket with this one"):
        load_ticket(older, model=architecture())

# --- hostile and malformed tickets (issue 12) ------------------------------------------------

def ticket_parts(path):
    data = path.read_bytes()
    header_len = struct.unpack_from("<Q", data, 12)[0]
    return json.loads(data[20:20 + header_len]), data[20 + header_len:-32]


def with_tensors(path, out, tensors: dict, edit=lambda header: None):
    """The ticket at ``path`` written to ``out`` (a valid file) storing ``tensors`` (name:
    tensor) too, its header ``edit``ed: as a forger, or an older lotterynet, would write it."""
    header, compressed = ticket_parts(path)
    edit(header)
    payload = bytearray(zlib.decompress(compressed))
    for name, t in tensors.items():
        data = t.detach().contiguous().view(-1).view(torch.uint8).numpy().tobytes()
        header["tensors"][name] = {"dtype": ticket_file.dtype_name(t.dtype),
                                   "shape": list(t.shape), "offset": len(payload),
                                   "nbytes": len(data)}
        payload += data
    header["payload_nbytes"] = len(payload)
    return write_ticket(out, header, zlib.compress(bytes(payload)))


def write_ticket(path, header, compressed):
    header_bytes = json.dumps(header).encode()
    body = struct.pack("<8sIQ", b"LNTICKET", 1, len(header_bytes)) + header_bytes + compressed
    path.write_bytes(body + hashlib.sha256(body).digest())
    return path


@pytest.fixture(scope="module")
def spec_ticket(tmp_path_factory):
    path = tmp_path_factory.mktemp("t") / "fc2.ticket"
    save_ticket(ln.models.build_model("fc2", width=8, sparsity=0.5, seed=0), path)
    return path


def peak_python_bytes(fn):
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_huge_announced_payload_is_refused_without_allocating(tmp_path, spec_ticket):
    header, compressed = ticket_parts(spec_ticket)
    header["payload_nbytes"] = 31 * 2**30
    bad = write_ticket(tmp_path / "bad.ticket", header, compressed)

    def load(match, **limits):
        with pytest.raises(TicketError, match=match):
            load_ticket(bad, **limits)

    assert peak_python_bytes(lambda: load("payload of 33285996544 bytes: over the limit")) < 2**20
    # within a raised limit, but more than the file's compressed bytes can inflate to
    assert peak_python_bytes(lambda: load("compressed bytes can hold", max_bytes=2**40)) < 2**20


def test_a_huge_file_a_device_or_a_pipe_is_refused_before_it_is_read(tmp_path, spec_ticket):
    """The file's kind, size and first bytes are checked before it is read (a 2 GiB file took
    2.5 GB and 10 s to be called "bad magic", /dev/zero filled the memory, a pipe hung)."""
    def refused(path, match, **limits):
        with pytest.raises(TicketError, match=match):
            load_ticket(path, **limits)

    big = tmp_path / "big.ticket"
    with open(big, "wb") as f:
        f.truncate(2**31)  # (sparse: no disk used)
    assert peak_python_bytes(lambda: refused(big, "bad magic", max_bytes=1000)) < 2**20
    padded = tmp_path / "padded.ticket"  # a ticket's first bytes, then 2 GiB
    shutil.copy(spec_ticket, padded)
    with open(padded, "r+b") as f:
        f.truncate(2**31)
    assert peak_python_bytes(lambda: refused(padded, "2147483648 bytes, more than a ticket "
                                                     "within the limit max_bytes=1000",
                                             max_bytes=1000)) < 2**20
    refused("/dev/zero", "not a regular file")
    os.mkfifo(tmp_path / "pipe")
    refused(tmp_path / "pipe", "not a regular file")


def test_a_runs_folder_given_as_a_ticket_is_told_its_ticket(tmp_path, spec_ticket):
    """``load_ticket("RUN")`` (the run's folder, not its ``RUN/model.ticket``) was refused as
    "not a regular file" without the file to give, as ``--resume RUN`` names its checkpoint."""
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(TicketError, match=r"run: not a regular file, so not a ticket$"):
        load_ticket(run)
    shutil.copy(spec_ticket, run / "model.ticket")
    with pytest.raises(TicketError, match=r"run: not a regular file, so not a ticket; give its "
                                          r"ticket, '.*run/model\.ticket'$"):
        load_ticket(run)


def test_spec_asking_for_31_gb_is_refused_on_the_meta_device(tmp_path, spec_ticket):
    header, compressed = ticket_parts(spec_ticket)
    header["spec"]["width"] = 5_000_000  # fc2 784 -> 5e6 -> 10: weights and scores, 31 GB
    bad = write_ticket(tmp_path / "bad.ticket", header, compressed)
    with pytest.raises(TicketError, match=r"model of 31\d{9} bytes, over the limit"):
        load_ticket(bad)
    header["spec"]["width"] = 9  # small, but not what the ticket holds
    with pytest.raises(TicketError, match=r"mask '1\.structure\.weight' differs"):
        load_ticket(write_ticket(tmp_path / "bad.ticket", header, compressed))


def test_convert_calls_asking_for_gigabytes_are_refused_on_the_meta_device(tmp_path):
    """The recorded convert() calls replayed on your model are untrusted too: a ticket asking
    for pairs=10**8 (16 GB) is refused before anything is allocated (it was allocated, then
    refused); a small call that does not build the ticket's layers names the difference."""
    path = tmp_path / "mlp.ticket"
    save_ticket(ln.convert(nn.Sequential(nn.Linear(4, 4)), sparsity=0.5, seed=0), path)
    header, compressed = ticket_parts(path)
    header["converts"][0]["kwargs"].update(structure="subsetsum", activation="identity",
                                           pairs=10**8)
    bad = write_ticket(tmp_path / "bad.ticket", header, compressed)

    def load(match):
        with pytest.raises(TicketError, match=match):
            load_ticket(bad, model=nn.Sequential(nn.Linear(4, 4)))

    assert peak_python_bytes(lambda: load(r"convert\(\) calls build a model of 16\d{9} "
                                          r"bytes, over the limit")) < 2**20
    header["converts"][0]["kwargs"]["pairs"] = 2
    bad = write_ticket(tmp_path / "bad.ticket", header, compressed)
    load(r"the model has no mask '0\.structure\.weight'")


def test_zlib_bomb_is_refused(tmp_path, spec_ticket):
    header, _ = ticket_parts(spec_ticket)
    bomb = zlib.compress(bytes(256 * 2**20), 9)  # 256 MiB of zeros in about 256 KiB
    bad = write_ticket(tmp_path / "bomb.ticket", header, bomb)

    def load():
        with pytest.raises(TicketError, match="payload is not the"):
            load_ticket(bad)

    peak = peak_python_bytes(load)
    assert peak < 32 * 2**20  # inflated no further than the announced size


@pytest.mark.parametrize("model_name", ["hf-hub:timm/resnet18.a1_in1k", "local-dir:{folder}"])
def test_a_spec_cannot_make_the_load_fetch_or_read_a_config(tmp_path, spec_ticket, model_name,
                                                           monkeypatch):
    """A spec naming a timm model that timm builds from a config it fetches (hf-hub:) or reads
    (local-dir:, the folder's config.json) is refused before timm is asked, with or without
    model=: the hub was asked (refused offline), the folder read."""
    (tmp_path / "config.json").write_text('{"architecture": "resnet10t"}')
    header, compressed = ticket_parts(spec_ticket)
    model_name = model_name.format(folder=tmp_path)
    header["spec"] = {"name": "timm", "model_name": model_name}
    bad = write_ticket(tmp_path / "net.ticket", header, compressed)
    monkeypatch.setattr(timm, "create_model", None)  # (not called)
    for model in (None, ln.models.build_model("fc2", width=8, sparsity=0.5, seed=0)):
        with pytest.raises(TicketError, match=f"the ticket's spec is timm's '{model_name}', "
                                              "which timm builds from a config it fetches or "
                                              "reads, as loading a ticket never does: save the "
                                              "ticket again"):
            load_ticket(bad, model=model)


def test_a_timm_model_built_from_a_folders_config_saves_a_ticket_of_your_own_model(tmp_path):
    """build_model('timm', model_name='local-dir:...') saves its ticket without the spec, as
    your own model's: load_ticket(path) says to pass the model (it read the folder's config,
    whatever it holds now), and a load into the model, built anew or by timm, is exact."""
    (tmp_path / "config.json").write_text('{"architecture": "resnet10t"}')
    kwargs = dict(model_name=f"local-dir:{tmp_path}", in_chans=1, num_classes=10)
    model = ln.models.build_model("timm", **kwargs, sparsity=0.5, seed=0).eval()
    save_ticket(model, tmp_path / "t.ticket")
    assert ticket_parts(tmp_path / "t.ticket")[0]["spec"] is None
    with pytest.raises(TicketError, match=r"or timm's hf-hub: or local-dir: model, .*\); pass the "
                                          r"architecture: load_ticket\(path, model=MyNet\(\)\)"):
        load_ticket(tmp_path / "t.ticket")
    x = torch.randn(2, 1, 32, 32)
    for fresh in (ln.models.build_model("timm", **kwargs, sparsity=0.5, seed=0),
                  timm.create_model(kwargs.pop("model_name"), pretrained=False, **kwargs)):
        assert torch.equal(load_ticket(tmp_path / "t.ticket", model=fresh).eval()(x), model(x))


def test_a_spec_cannot_make_the_load_read_a_file(tmp_path, spec_ticket, monkeypatch):
    """A spec's timm ``model_kwargs`` that load weights (``checkpoint_path``, ``pretrained``) are
    refused before timm is called: a ticket made the load read any file it named."""
    header, compressed = ticket_parts(spec_ticket)
    opened = []
    monkeypatch.setattr(torch, "load", lambda *a, **kw: opened.append(a) or {})
    for weights in ({"checkpoint_path": str(spec_ticket)}, {"pretrained": True}):
        header["spec"] = {"name": "timm", "model_name": "resnet10t", "in_chans": 1,
                          "num_classes": 10, "model_kwargs": weights}
        bad = write_ticket(tmp_path / "file.ticket", header, compressed)
        with pytest.raises(TicketError, match=f"{next(iter(weights))}.*never loaded"):
            load_ticket(bad)
    assert not opened


def edit(field, value):
    def apply(header):
        target = header
        *path, last = field.split("/")
        for key in path:
            target = target[key] if isinstance(target, dict) else target[int(key)]
        target[last] = value
    return apply


MALFORMED = {
    "header-not-object": lambda h: h.clear() or h.update({"x": [1]}),
    "payload-negative": edit("payload_nbytes", -1),
    "payload-string": edit("payload_nbytes", "315"),
    "spec-no-name": edit("spec", {"width": 8}),
    "masks-list": edit("masks", []),
    "mask-shape-float": edit("masks/1.structure.weight/shape", [8.0, 784]),
    "mask-shape-negative": edit("masks/1.structure.weight/shape", [-8, -784]),
    "mask-too-many-dims": edit("masks/1.structure.weight/shape", [1] * 40),
    "mask-k-bool": edit("masks/1.structure.weight/k", True),
    "mask-k-too-big": edit("masks/1.structure.weight/k", 10**9),
    "mask-offset-outside": edit("masks/1.structure.weight/offset", 10**12),
    "converts-not-list": edit("converts", {"path": ""}),
    "channels-last-not-list": edit("channels_last", "0.weight"),
    "tensor-dtype-list": edit("tensors/x", {"dtype": ["float32"], "shape": [1], "offset": 0,
                                            "nbytes": 4}),  # (was a TypeError: unhashable)
}


@pytest.mark.parametrize("damage", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_headers_raise_ticket_error(tmp_path, spec_ticket, damage):
    header, compressed = ticket_parts(spec_ticket)
    damage(header)
    with pytest.raises(TicketError, match="malformed|payload"):
        load_ticket(write_ticket(tmp_path / "bad.ticket", header, compressed))


def test_header_that_is_not_json_raises_ticket_error(tmp_path, spec_ticket):
    _, compressed = ticket_parts(spec_ticket)
    body = struct.pack("<8sIQ", b"LNTICKET", 1, 5) + b"{\xff[1" + compressed
    path = tmp_path / "bad.ticket"
    path.write_bytes(body + hashlib.sha256(body).digest())
    with pytest.raises(TicketError, match="malformed"):
        load_ticket(path)


def test_a_model_on_the_meta_device_is_refused_at_load(tmp_path):
    """``load_ticket(path, model=...)`` of a model built on the meta device (no values to
    restore the ticket into) is refused in one line naming a tensor; it failed inside torch
    with "NotImplementedError: Cannot copy out of meta tensor; no data!"."""
    def make():
        return nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3), nn.Linear(3, 2))

    save_ticket(ln.convert(make(), sparsity=0.5, seed=0), tmp_path / "t.ticket")
    with torch.device("meta"):
        model = make()
    with pytest.raises(TicketError, match=r"t\.ticket: model= Sequential's tensor '0\.weight' is "
                                          r"on the meta device, .* build the model on a real "
                                          r"device \(cpu, cuda\)$"):
        load_ticket(tmp_path / "t.ticket", model=model)
    assert isinstance(load_ticket(tmp_path / "t.ticket", model=make())[0], ln.SubnetLinear)


def test_a_wrappers_ticket_says_it_holds_the_converted_submodule(tmp_path):
    """The ticket of a wrapper whose .model is converted (a LightningModule converting it when
    made) loaded into nothing obvious: the wrapper was "converted already", the model itself
    "does not build (AttributeError('SmallCNN has no attribute `model`'))"."""
    class Wrapper(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = ln.convert(SmallCNN(), sparsity=0.5, seed=0)

    save_ticket(Wrapper(), tmp_path / "w.ticket")
    advice = (r"; the ticket's model wraps the converted one, its submodule 'model' \(a "
              r"LightningModule's\?\): .* \(save_ticket\(wrapper\.model, path\)\)")
    with pytest.raises(TicketError, match=r"model= Wrapper is converted already, .*" + advice):
        load_ticket(tmp_path / "w.ticket", model=Wrapper())
    absent = (r"model= SmallCNN has no submodule 'model', on which the ticket's convert\(\) "
              r"calls were made in the model it was saved from")
    with pytest.raises(TicketError, match=absent + advice):
        load_ticket(tmp_path / "w.ticket", model=SmallCNN())
    save_ticket(Wrapper().model, tmp_path / "m.ticket")  # (what it advises loads)
    load_ticket(tmp_path / "m.ticket", model=SmallCNN())


def test_a_models_ticket_loaded_into_its_wrapper_names_the_submodule(tmp_path):
    """The ticket of a converted model (``save_ticket(lit.model, path)``, as the README
    advises) loaded into a fresh wrapper of it (a LightningModule given the model) was refused
    as "saved from another architecture"; it names the wrapper's submodule that holds the
    ticket's masks and says to load into that model."""
    class Wrapper(nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

    save_ticket(ln.convert(SmallCNN(), sparsity=0.5, seed=0), tmp_path / "m.ticket")
    with pytest.raises(TicketError, match=r"m\.ticket: the model has no mask '\S+' but its "
                                          r"submodule 'model' holds the ticket's masks: .* "
                                          r"\(save_ticket\(wrapper\.model, path\)\)"):
        load_ticket(tmp_path / "m.ticket", model=Wrapper(SmallCNN()))
    with pytest.raises(TicketError, match=r"\(the ticket was saved from another architecture\)$"):
        load_ticket(tmp_path / "m.ticket", model=nn.Sequential(nn.Flatten(), nn.Linear(784, 10)))
    load_ticket(tmp_path / "m.ticket", model=Wrapper(SmallCNN()).model)
