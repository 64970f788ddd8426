import hashlib
import json
import os
import re
import struct
import sys
import warnings

import pytest
import timm
import torch
from torch import nn

import lotterynet as ln
import prefork
from conftest import REPO
from lotterynet import timm_models  # noqa: F401 (registers the "timm" architecture)
from lotterynet.models import MODELS, build_model
from lotterynet.ticket import load_ticket, save_ticket
from lotterynet.ticket_file import FORMAT_VERSION, TicketError


@MODELS.register("ticket_test_mlp")
def ticket_test_mlp(*, sparsity, seed, **layer_options):
    """A subnet MLP with a trainable LayerNorm (a trained non-masked tensor)."""
    return nn.Sequential(
        ln.SubnetLinear(12, 16, True, sparsity=sparsity, seed=seed, **layer_options), nn.ReLU(),
        nn.LayerNorm(16),
        ln.SubnetLinear(16, 5, True, sparsity=sparsity, seed=seed + 1, **layer_options))


CNN = dict(name="timm", model_name="mobilenetv3_small_050", num_classes=10, sparsity=0.7, seed=2)
MLP = dict(name="ticket_test_mlp", sparsity=0.6, seed=1, structure="subsetsum")
_DRAW = torch.Generator().manual_seed(0)  # not the global RNG: its state depends on test order
IMAGES, VECTORS = torch.randn(2, 3, 32, 32, generator=_DRAW), torch.randn(4, 12, generator=_DRAW)


def trained(spec, x, steps=2):
    spec = dict(spec)
    model = build_model(spec.pop("name"), **spec)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        model(x).logsumexp(-1).sum().backward()
        opt.step()
    return model.eval()


def masks(model):
    return {n: m.mask() for n, m in model.named_modules() if isinstance(m, ln.MaskedWeight)}


def assert_same_ticket(a, b, x):
    out = a(x)
    assert torch.isfinite(out).all()  # NaN != NaN: a diverged model could not be compared
    assert torch.equal(out, b(x))
    ma, mb = masks(a), masks(b)
    assert ma.keys() == mb.keys() and all(torch.equal(ma[n], mb[n]) for n in ma)
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items()
               if not k.endswith("scores"))


@pytest.mark.parametrize("spec,x", [
    (CNN, IMAGES),
    ({**CNN, "bias": "trainable", "batchnorm": "trainable"}, IMAGES),
    ({**MLP, "activation": "relu"}, VECTORS),
    ({**MLP, "activation": "identity", "shared": False}, VECTORS),
], ids=["cnn-dense", "cnn-trainable-bn-bias", "mlp-subsetsum-relu",
        "mlp-subsetsum-identity-unshared"])
def test_round_trip_is_bit_identical(tmp_path, spec, x):
    model = trained(spec, x)
    fresh = build_model(**{k: v for k, v in spec.items() if k != "name"}, name=spec["name"])
    changed = [k for k, v in fresh.state_dict().items()
               if not k.endswith("scores") and not torch.equal(v, model.state_dict()[k])]
    assert changed  # running stats / LayerNorm / trainable BN: restored from the ticket
    save_ticket(model, tmp_path / "t.ticket")
    assert_same_ticket(model, load_ticket(tmp_path / "t.ticket").eval(), x)


def test_a_model_frozen_for_inference_saves_its_trained_tensors(tmp_path):
    """``requires_grad_(False)`` before saving changes nothing: the trained biases and batch
    norms are stored (what a rebuild freezes is regenerated, not what is frozen now). A weight
    the build freezes but that requires grad now is refused, naming it, and nothing written."""
    spec = {**CNN, "bias": "trainable", "batchnorm": "trainable"}
    model = trained(spec, IMAGES).requires_grad_(False)
    save_ticket(model, tmp_path / "t.ticket")
    assert_same_ticket(model, load_ticket(tmp_path / "t.ticket").eval(), IMAGES)
    into = build_model(**{k: v for k, v in spec.items() if k != "name"}, name=spec["name"])
    loaded = load_ticket(tmp_path / "t.ticket", model=into.requires_grad_(False))  # (your model,
    assert_same_ticket(model, loaded.eval(), IMAGES)  # frozen too: what its build freezes)
    thawed = next(n for n, p in model.named_parameters() if n.endswith("structure.weight.weight"))
    model.get_parameter(thawed).requires_grad_(True)
    with pytest.raises(ValueError, match=rf"parameter '{re.escape(thawed)}' requires grad, but "
                                         r"the model is built with it frozen, .* or make it "
                                         r"trainable where the model is made \(convert\(bias=, "
                                         r"batchnorm=, others='trainable'\), or a subnet layer's "
                                         r"own bias='trainable'\) so that the ticket stores it$"):
        save_ticket(model, tmp_path / "u.ticket")
    assert not (tmp_path / "u.ticket").exists()


def test_global_topk_ks_survive(tmp_path):
    model = trained({**MLP, "activation": "identity"}, VECTORS)
    ks = ln.global_topk(model, 0.8)
    assert len(set(ks.values())) > 1
    save_ticket(model, tmp_path / "t.ticket")
    loaded = load_ticket(tmp_path / "t.ticket").eval()
    assert_same_ticket(model, loaded, VECTORS)
    assert {n: m.k for n, m in loaded.named_modules() if isinstance(m, ln.MaskedWeight)} == ks


def test_a_lightning_modules_ticket_is_its_models(tmp_path, monkeypatch):
    """save_ticket of an EdgePopupModule writes the ticket of the model it trains, which
    build_model made: with its spec, so the path alone loads it (it was saved without, as the
    module's, and the path alone was refused); into a module, its model loads. An older
    ticket, the whole module's, loads into a compiled module and returns it (was: the module,
    uncompiled)."""
    module = ln.EdgePopupModule({"name": "fc2", "width": 8, "sparsity": 0.5, "seed": 0})
    with torch.no_grad():
        module.model[1].structure.weight.scores.neg_()  # another mask than a fresh build's
    save_ticket(module, tmp_path / "t.ticket")
    x = torch.randn(2, 1, 28, 28)
    assert_same_ticket(module.model.eval(), load_ticket(tmp_path / "t.ticket").eval(), x)
    into = ln.EdgePopupModule({"name": "fc2", "width": 8, "sparsity": 0.5, "seed": 0})
    assert load_ticket(tmp_path / "t.ticket", model=into) is into
    assert_same_ticket(module.model, into.model.eval(), x)
    with monkeypatch.context() as older:  # as an older lotterynet saved it: no spec
        older.setattr(ln.ticket, "_trained", lambda model: model)
        save_ticket(module, tmp_path / "older.ticket")
    into = torch.compile(ln.EdgePopupModule({"name": "fc2", "width": 8, "sparsity": 0.5,
                                             "seed": 0}))
    assert load_ticket(tmp_path / "older.ticket", model=into) is into
    assert_same_ticket(module.model, into.model.eval(), x)


def test_a_registered_architectures_layers_made_without_a_seed_store_their_weights(
        tmp_path, monkeypatch):
    """An architecture of your own, registered in MODELS, whose subnet layer is made without a
    seed: its ticket stores that layer's frozen weights (as for a model without a spec), so the
    path alone loads it whatever torch's global generator drew since (was: "different frozen
    random weights"), and save_ticket warns that it does."""
    monkeypatch.setitem(MODELS._entries, "unseeded_mlp", lambda *, sparsity, seed: nn.Sequential(
        ln.SubnetLinear(12, 8, True, sparsity=sparsity), nn.ReLU(),
        ln.SubnetLinear(8, 5, True, sparsity=sparsity, seed=seed)))
    model = build_model("unseeded_mlp", sparsity=0.5, seed=0).eval()
    with pytest.warns(UserWarning, match=r"1 subnet layer made without a seed \('0'\): the "
                                         r"ticket stores their frozen weights, .*: 416 of its"):
        save_ticket(model, tmp_path / "t.ticket")  # (12 x 8 + 8 float32 values)
    assert_same_ticket(model, load_ticket(tmp_path / "t.ticket").eval(), VECTORS)


def test_a_ticket_loaded_by_path_repeats_none_of_the_builds_warnings(tmp_path, monkeypatch):
    """A registered architecture whose build converts with a warning (here a ConvTranspose2d
    left dense; a timm model's near-zero layer scales, a parent reading a layer's weight): its
    ticket loaded by path alone rebuilds it from the spec without repeating the warning, as
    the replayed convert() calls never did (it was given again at every load)."""
    def upsampling(*, seed):
        torch.manual_seed(seed)  # (the dense ConvTranspose2d's weights, as a builder would)
        return ln.convert(nn.Sequential(nn.Linear(6, 4), nn.Unflatten(1, (1, 2, 2)),
                                        nn.ConvTranspose2d(1, 1, 2)),
                          sparsity=0.5, seed=seed, include=["0", "2"])

    monkeypatch.setitem(MODELS._entries, "upsampling", upsampling)
    with pytest.warns(UserWarning, match=r"left dense"):
        model = build_model("upsampling", seed=0)
    save_ticket(model, tmp_path / "t.ticket")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = load_ticket(tmp_path / "t.ticket")
    x = torch.randn(3, 6)
    assert torch.equal(loaded.eval()(x), model.eval()(x))


def test_an_argument_a_ticket_cannot_give_back_is_refused_where_the_model_is_built(
        tmp_path, monkeypatch):
    """A namedtuple argument built and saved its ticket, whose JSON gave it back as a list, so
    the load failed ("the ticket's model does not build (AttributeError: 'list' object has no
    attribute 'hidden')"): build_model refuses it, naming it and what to pass. So is NaN or
    infinity (a model built with it failed save_ticket: "not JSON-able"). A tuple, which the
    ticket gives back as a list, builds the same model from it."""
    import collections

    Shape = collections.namedtuple("Shape", "hidden out")
    monkeypatch.setitem(MODELS._entries, "shaped_mlp", lambda *, shape, seed: nn.Sequential(
        ln.SubnetLinear(12, shape[0], True, sparsity=0.5, seed=seed), nn.ReLU(),
        ln.SubnetLinear(shape[0], shape[1], True, sparsity=0.5, seed=seed + 1)))
    with pytest.raises(TypeError, match=r"^argument shape=Shape\(hidden=8, out=5\) is a "
                                        r"namedtuple \(Shape\), which a ticket \(JSON\) or a "
                                        r"weights_only checkpoint cannot give back as it is: pass "
                                        r"a tuple or a dict of its fields \(numbers, "):
        build_model("shaped_mlp", shape=Shape(8, 5), seed=0)
    with pytest.raises(ValueError, match=r"^argument shape\[1\]=inf is NaN or infinity, which a "
                                         r"ticket \(JSON\) cannot hold: pass a finite number$"):
        build_model("shaped_mlp", shape=(8, float("inf")), seed=0)
    model = build_model("shaped_mlp", shape=(8, 5), seed=0).eval()
    save_ticket(model, tmp_path / "t.ticket")
    assert_same_ticket(model, load_ticket(tmp_path / "t.ticket").eval(), VECTORS)


class Late:
    """Audited at the interpreter's exit: freed as the module holding it is cleared."""

    def __del__(self):
        os.listdir(".")


def test_fresh_process_rebuilds_bit_identically(tmp_path):
    """... and exits without a word: the loads' audit hook, which outlives the ticket module's
    globals, printed 'Exception ignored in audit hook ... TypeError' for an event at exit."""
    model = trained(CNN, IMAGES)
    save_ticket(model, tmp_path / "t.ticket")
    torch.save(IMAGES, tmp_path / "x.pt")
    script = ("import sys, torch; import lotterynet.timm_models; "
              "from lotterynet.ticket import load_ticket; "
              "m = load_ticket(sys.argv[1]).eval(); "
              "torch.save(m(torch.load(sys.argv[2], weights_only=True)), sys.argv[3]); "
              "import lotterynet.ticket_rebuild, test_ticket; "
              "lotterynet.ticket_rebuild.late = test_ticket.Late()")
    done = prefork.run([sys.executable, "-c", script, tmp_path / "t.ticket", tmp_path / "x.pt",
                        tmp_path / "y.pt"], cwd=REPO,
                       env={**os.environ, "PYTHONPATH": f"{REPO}:{REPO / 'tests'}"})
    assert done.returncode == 0, done.stderr
    assert torch.equal(torch.load(tmp_path / "y.pt", weights_only=True), model(IMAGES))
    assert done.stderr == ""


def strides(model):
    return {name: t.stride() for name, t in model.state_dict().items()}


def test_a_channels_last_model_loads_channels_last(tmp_path):
    """A channels_last model's ticket, loaded by path, is laid out as the model was, tensor for
    tensor (the 1x1 convolutions' weights too, contiguous in both formats), with bit-identical
    outputs; it came back contiguous, outputs ~1e-7 off. A ticket that does not record it
    (older) loads contiguous."""
    model = trained(CNN, IMAGES).to(memory_format=torch.channels_last)
    save_ticket(model, tmp_path / "t.ticket")
    loaded = load_ticket(tmp_path / "t.ticket").eval()
    assert strides(loaded) == strides(model) != strides(trained(CNN, IMAGES, steps=0))
    assert_same_ticket(model, loaded, IMAGES.contiguous(memory_format=torch.channels_last))
    older = tmp_path / "older.ticket"
    older.write_bytes(reheadered((tmp_path / "t.ticket").read_bytes(),
                                 lambda header: header.pop("channels_last")))
    assert strides(load_ticket(older)) == strides(trained(CNN, IMAGES, steps=0))
    (tmp_path / "bad.ticket").write_bytes(reheadered(
        (tmp_path / "t.ticket").read_bytes(), lambda h: h["channels_last"].append("conv.x")))
    with pytest.raises(TicketError, match="lays out 'conv.x' channels last, but the model has "
                                          "no 4- or 5-dimensional tensor of that name"):
        load_ticket(tmp_path / "bad.ticket")


def test_dense_resnet18_ticket_is_25x_smaller_than_its_state_dict(tmp_path):
    plain = timm.create_model("resnet18", pretrained=False, num_classes=10)
    state_bytes = sum(t.numel() * t.element_size() for t in plain.state_dict().values())
    model = build_model("timm", model_name="resnet18", num_classes=10, sparsity=0.5)
    size = save_ticket(model, tmp_path / "t.ticket")
    assert size == (tmp_path / "t.ticket").stat().st_size
    assert state_bytes / size >= 25
    assert size >= ln.count_params(model)["maskable"] / 8  # at least one bit per weight


@pytest.fixture(scope="module")
def ticket_bytes(tmp_path_factory):
    path = tmp_path_factory.mktemp("ticket") / "t.ticket"
    save_ticket(trained({**MLP, "activation": "relu"}, VECTORS), path)
    return path.read_bytes()


def rejected(tmp_path, data: bytes, match: str):
    path = tmp_path / "bad.ticket"
    path.write_bytes(data)
    with pytest.raises(TicketError, match=match):
        load_ticket(path)


@pytest.mark.parametrize("where", [0.0, 0.01, 0.3, 0.6, 0.97, 1.0])
def test_flipped_byte_is_rejected(tmp_path, ticket_bytes, where):
    data = bytearray(ticket_bytes)
    i = min(int(where * len(data)), len(data) - 1)
    data[i] ^= 0x10
    rejected(tmp_path, bytes(data), "checksum|magic|version|header")


@pytest.mark.parametrize("keep", [0, 10, 0.5, -1])
def test_truncated_ticket_is_rejected(tmp_path, ticket_bytes, keep):
    n = int(keep * len(ticket_bytes)) if isinstance(keep, float) else keep % len(ticket_bytes)
    rejected(tmp_path, ticket_bytes[:n], "truncated|checksum")


def test_other_format_version_is_rejected(tmp_path, ticket_bytes):
    body = bytearray(ticket_bytes[:-32])
    struct.pack_into("<I", body, 8, FORMAT_VERSION + 1)  # a well-formed ticket of version 2
    rejected(tmp_path, bytes(body) + hashlib.sha256(body).digest(),
             f"version {FORMAT_VERSION + 1}")


def reheadered(ticket: bytes, edit) -> bytes:
    """The ticket with ``edit`` applied to its JSON header, and a valid checksum."""
    header_len = struct.unpack_from("<Q", ticket, 12)[0]
    header = json.loads(ticket[20:20 + header_len])
    edit(header)
    new_header = json.dumps(header).encode()
    body = ticket[:12] + struct.pack("<Q", len(new_header)) + new_header + ticket[
        20 + header_len:-32]
    return body + hashlib.sha256(body).digest()


def bump_first_k(header):
    next(iter(header["masks"].values()))["k"] += 1


def shrink_payload(header):
    header["payload_nbytes"] -= 1


@pytest.mark.parametrize("edit,match", [
    (bump_first_k, "k="),
    (shrink_payload, "payload"),
    (lambda header: header.pop("tensors"), "malformed"),
    (lambda header: header["spec"].update(seed=99), "different frozen"),
    (lambda header: header.update(frozen_dtypes=["int64"]), "malformed.*frozen_dtypes"),
], ids=["wrong-k", "wrong-payload-size", "missing-field", "other-seed", "bad-frozen-dtypes"])
def test_checksummed_but_inconsistent_tickets_are_rejected(tmp_path, ticket_bytes, edit, match):
    rejected(tmp_path, reheadered(ticket_bytes, edit), match)


def test_a_ticket_whose_spec_or_convert_call_holds_an_ignored_option_loads(tmp_path,
                                                                         ticket_bytes):
    """Layers ignored a structure option that their structure does not read before they refused
    it (``hidden`` on subsetsum; ``--structure wide``'s dense spec held ``--activation``): a
    ticket saved then, whose spec or ``convert()`` call holds one, loads as it was built."""
    path = tmp_path / "older.ticket"
    path.write_bytes(reheadered(ticket_bytes, lambda header: header["spec"].update(hidden=7)))
    (tmp_path / "t.ticket").write_bytes(ticket_bytes)
    assert_same_ticket(load_ticket(tmp_path / "t.ticket"), load_ticket(path), VECTORS)
    save_linear(tmp_path / "linear.ticket")
    path.write_bytes(reheadered((tmp_path / "linear.ticket").read_bytes(), lambda header: (
        header["converts"][0]["kwargs"].update(activation="identity"))))
    assert_same_ticket(load_linear(tmp_path / "linear.ticket"), load_linear(path),
                       VECTORS[:, :4])


def test_sparser_tickets_are_smaller(tmp_path):
    sizes = [save_ticket(build_model("timm", model_name="mobilenetv3_small_050", sparsity=s),
                         tmp_path / f"{s}.ticket") for s in (0.5, 0.9, 0.99)]
    assert sizes[0] > 1.5 * sizes[1] and sizes[1] > 3 * sizes[2]


#: A ticket's frozen_sha256 that no rebuild gives (another torch version drew other weights).
OTHER_WEIGHTS = "0" * 64


def test_model_that_does_not_rebuild_is_rejected(tmp_path):
    """A model whose frozen weights are no longer what its spec's seed draws (changed in place)
    is refused at save, naming the first, and nothing written (was: saved, and its load said
    "different frozen random weights ... another torch version?"); a ticket whose rebuild
    draws other weights than were saved is refused at load."""
    model = trained({**MLP, "activation": "relu"}, VECTORS)
    save_ticket(model, tmp_path / "t.ticket")
    with torch.no_grad():
        model[0].structure.u.weight.add_(1e-3)  # no longer what the spec's seed draws
    with pytest.raises(ValueError, match=r"save_ticket: frozen parameter '0\.structure\.u\."
                                         r"weight' is no longer what its seed draws .* save a "
                                         r"checkpoint \(model\.state_dict\(\)\) instead"):
        save_ticket(model, tmp_path / "u.ticket")
    assert not (tmp_path / "u.ticket").exists()
    (tmp_path / "t.ticket").write_bytes(reheadered(
        (tmp_path / "t.ticket").read_bytes(), lambda h: h.update(frozen_sha256=OTHER_WEIGHTS)))
    with pytest.raises(TicketError, match="different frozen"):
        load_ticket(tmp_path / "t.ticket")


def test_a_lenet5_built_on_the_meta_device_and_reset_saves_a_ticket_that_loads(tmp_path):
    """LeNet5 built on the meta device, given storage by ``to_empty`` and reset (the README's
    idiom) drew its random frozen convolutions from torch's global generator, not its seed:
    its ticket's load said "rebuilding the model gave different frozen random weights"; they
    are drawn from the seed, as built, and one changed in place is refused at save, naming it
    (they were not compared)."""
    with torch.device("meta"):
        model = build_model("lenet5", sparsity=0.7, seed=3)
    model.to_empty(device="cpu")
    model.apply(lambda m: hasattr(m, "reset_parameters") and m.reset_parameters())
    built = build_model("lenet5", sparsity=0.7, seed=3).state_dict()
    assert all(torch.equal(t, built[n]) for n, t in model.state_dict().items())
    save_ticket(model, tmp_path / "t.ticket")
    assert_same_ticket(model, load_ticket(tmp_path / "t.ticket"), IMAGES[:, :1, 2:30, 2:30])
    with torch.no_grad():
        model[3].weight[0, 0, 0, 0] += 1
    with pytest.raises(ValueError, match=r"^save_ticket: frozen parameter '3\.weight' is no "
                                         r"longer what its seed draws "):
        save_ticket(model, tmp_path / "u.ticket")
    # convert masks them as the nn.Conv2d they compute, as it did
    assert isinstance(ln.convert(build_model("lenet5"), sparsity=0.5)[3], ln.SubnetConv2d)


def test_a_timm_model_built_on_the_meta_device_and_reset_is_refused_at_save_naming_a_token(
        tmp_path):
    """A timm ViT built on the meta device, given storage by ``to_empty`` and reset, holds
    what no reset draws as its spec's build does (its ``cls_token``, position embedding:
    uninitialised; a layer left dense, reset from torch's global generator): its ticket was
    saved, and its load refused ("rebuilding the model gave different frozen random
    weights") after training. save_ticket compares them with a real build and refuses,
    naming the first; given a real build's values (``assign=True``) it saves, and loads."""
    spec = dict(name="timm", model_name="vit_tiny_patch16_224", img_size=16, num_classes=3,
                model_kwargs={"patch_size": 8, "depth": 1}, sparsity=0.5, seed=1)
    with torch.device("meta"):
        model = build_model(**spec)
    model.to_empty(device="cpu")
    model.apply(lambda m: hasattr(m, "reset_parameters") and m.reset_parameters())
    with pytest.raises(ValueError, match=r"^save_ticket: frozen parameter 'cls_token' is not "
                                         r"what the model's spec builds: the model was built "
                                         r"on the meta device and to_empty left it "
                                         r"uninitialised, .* build the model on a real device "
                                         r"\(or give it a real build's values: model\."
                                         r"load_state_dict\(state, assign=True\)\)$"):
        save_ticket(model, tmp_path / "t.ticket")
    assert not (tmp_path / "t.ticket").exists()
    model.load_state_dict(build_model(**spec).state_dict(), assign=True)
    save_ticket(model, tmp_path / "t.ticket")
    assert_same_ticket(model, load_ticket(tmp_path / "t.ticket"), IMAGES[:, :, :16, :16])


def test_saving_a_spec_models_ticket_builds_no_second_model(tmp_path, monkeypatch):
    """save_ticket's rebuild of a spec's model (its structure and shapes checked against the
    model's) is on the meta device and its frozen weights are compared a layer at a time: it
    was a real second model (at a run's end, twice the model's memory)."""
    from lotterynet import ticket_rebuild

    built, build = [], ticket_rebuild.build_model
    monkeypatch.setattr(ticket_rebuild, "build_model",
                        lambda **spec: built.append(build(**spec)) or built[-1])
    save_ticket(trained(MLP, VECTORS), tmp_path / "t.ticket")
    assert built and all(p.is_meta for model in built for p in model.parameters())


def test_a_rebuild_of_other_weights_is_hashed_only_in_the_saved_dtypes(tmp_path, monkeypatch):
    """A ticket records the floating dtypes of its frozen weights (``frozen_dtypes``): a
    rebuild that draws other weights is refused after 3 hashes of them (as built, rounded
    through float16, through bfloat16), not 10 (every rounding and dtype, as an older ticket,
    which does not record them, still does: refused the same, and its dtype found)."""
    from lotterynet import ticket_frozen

    save_ticket(trained(MLP, VECTORS), tmp_path / "t.ticket")
    (tmp_path / "t.ticket").write_bytes(reheadered(
        (tmp_path / "t.ticket").read_bytes(), lambda h: h.update(frozen_sha256=OTHER_WEIGHTS)))
    save_ticket(trained(MLP, VECTORS).double(), tmp_path / "t64.ticket")
    for name in ("t", "t64"):
        (tmp_path / f"{name}-older.ticket").write_bytes(reheadered(
            (tmp_path / f"{name}.ticket").read_bytes(), lambda h: h.pop("frozen_dtypes")))
    hashes, digest = [], ticket_frozen._digest
    monkeypatch.setattr(ticket_frozen, "_digest", lambda *a: hashes.append(a) or digest(*a))
    for name, expected in (("t", 3), ("t-older", 10)):
        hashes.clear()
        with pytest.raises(TicketError, match="different frozen"):
            load_ticket(tmp_path / f"{name}.ticket")
        assert len(hashes) == expected
    assert next(load_ticket(tmp_path / "t64-older.ticket").parameters()).dtype == torch.float64


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_a_ticket_saved_in_another_dtype_loads_in_it(tmp_path, dtype):
    """A model saved after ``.to(dtype)`` is rebuilt from its spec in that dtype, bit for bit;
    a float32 model given to load it into is refused naming the dtype (was: "different
    frozen random weights ... another torch version?")."""
    model = trained(MLP, VECTORS).to(dtype)
    save_ticket(model, tmp_path / "t.ticket")
    loaded = load_ticket(tmp_path / "t.ticket")
    assert next(loaded.parameters()).dtype == dtype
    assert_same_ticket(model, loaded, VECTORS.to(dtype))
    spec = dict(MLP)
    with pytest.raises(TicketError, match=rf"saved from a {dtype} model; load it into "
                                          rf"model.to\({dtype}\)"):
        load_ticket(tmp_path / "t.ticket", build_model(spec.pop("name"), **spec))


@pytest.mark.parametrize("through", [torch.float16, torch.bfloat16])
def test_a_model_cast_through_a_narrower_dtype_and_back_loads(tmp_path, through):
    """A model taken to half precision and back (``model.half()`` for a quick evaluation,
    then ``.float()``) saved a ticket whose frozen weights are the seed's rounded, which no
    rebuild drew: its load said "different frozen random weights ... different torch
    version?"; it is rebuilt rounded so, bit for bit, by spec and into your model, and saved
    later in float64 too."""
    model = trained(MLP, VECTORS).to(through).float()
    save_ticket(model, tmp_path / "t.ticket")
    spec = dict(MLP)
    for loaded in (load_ticket(tmp_path / "t.ticket"),
                   load_ticket(tmp_path / "t.ticket", build_model(spec.pop("name"), **spec))):
        assert next(loaded.parameters()).dtype == torch.float32
        assert_same_ticket(model, loaded, VECTORS)
    save_ticket(model.double(), tmp_path / "t64.ticket")
    assert_same_ticket(model, load_ticket(tmp_path / "t64.ticket"), VECTORS.double())


def test_a_ticket_loads_under_another_default_dtype(tmp_path):
    """A float32 ticket loaded after ``torch.set_default_dtype(torch.float64)``: the seeds
    draw the same numbers, so it rebuilds, in the dtype it was saved in."""
    model = trained(MLP, VECTORS)
    save_ticket(model, tmp_path / "t.ticket")
    torch.set_default_dtype(torch.float64)
    try:
        loaded = load_ticket(tmp_path / "t.ticket")
    finally:
        torch.set_default_dtype(torch.float32)
    assert next(loaded.parameters()).dtype == torch.float32
    assert_same_ticket(model, loaded, VECTORS)


def test_a_ticket_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    """A save that dies while writing leaves the ticket that was there; a folder is refused."""
    path = tmp_path / "t.ticket"
    save_ticket(trained(MLP, VECTORS), path)
    before = path.read_bytes()

    def dies_half_way(self, data):
        with open(self, "wb") as f:
            f.write(data[: len(data) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(type(path), "write_bytes", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        save_ticket(trained(MLP, VECTORS, steps=3), path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["t.ticket"]
    monkeypatch.undo()
    with pytest.raises(ValueError, match="is a folder; give the ticket a file name"):
        save_ticket(trained(MLP, VECTORS), tmp_path)


def save_linear(path):
    return save_ticket(ln.convert(nn.Sequential(nn.Linear(4, 3)), sparsity=0.5, seed=0), path)


def load_linear(path):
    return load_ticket(path, model=nn.Sequential(nn.Linear(4, 3)))


@pytest.mark.parametrize("call,path,error,said", [
    (save_linear, "existing_file/x.ticket", ValueError, "existing_file' is a file, not a folder"),
    (save_linear, "existing_file/a/x.ticket", ValueError, "existing_file' is a file, not a folder"),
    (save_linear, None, TypeError, "path must be a str or os.PathLike (the ticket file), got None"),
    (save_linear, 3, TypeError, "path must be a str or os.PathLike (the ticket file), got 3"),
    (load_linear, None, TypeError, "path must be a str or os.PathLike (the ticket file), got None"),
])
def test_a_bad_path_is_refused_naming_it(tmp_path, monkeypatch, call, path, error, said):
    """Were pathlib's "FileExistsError: [Errno 17] File exists" (a file where the ticket's
    folder belongs) and "expected str, bytes or os.PathLike object, not NoneType" (naming no
    argument)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "existing_file").write_text("")
    with pytest.raises(error, match=re.escape(said)):
        call(path)
    assert os.listdir(tmp_path) == ["existing_file"]


def test_a_model_built_with_another_spec_is_refused_naming_the_option(tmp_path):
    """A ticket of build_model's model, loaded into a model built with other arguments: one of
    another sparsity took the ticket's masks and kept its own spec (model.spec said 0.9 over
    masks of 0.5), one of another structure was said to be "saved from another architecture",
    one of another seed to draw "different frozen random weights". Each is refused naming the
    first argument that differs; a default spelled out is no difference."""
    model = build_model("fc2", width=8, sparsity=0.5, seed=0)
    save_ticket(model, tmp_path / "t.ticket")
    for other, key, theirs, mine in ((dict(sparsity=0.9), "sparsity", 0.5, 0.9),
                                     (dict(structure="subsetsum"), "structure", "'dense'",
                                      "'subsetsum'"),
                                     (dict(seed=1), "seed", 0, 1)):
        into = build_model("fc2", **{**dict(width=8, sparsity=0.5, seed=0), **other})
        with pytest.raises(TicketError, match=rf"the ticket was saved from build_model\(\.\.\., "
                                              rf"{key}={theirs}\), but model= was built with "
                                              rf"{key}={mine}: load_ticket\(path\) without "
                                              r"model= rebuilds"):
            load_ticket(tmp_path / "t.ticket", model=into)
    into = build_model("fc2", width=8, sparsity=0.5, seed=0, kept="round")
    x = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    assert_same_ticket(model, load_ticket(tmp_path / "t.ticket", model=into).eval(), x)


@pytest.mark.parametrize("spec", [{"width": 3}, "resnet"])
def test_a_users_own_spec_attribute_is_not_a_build_model_spec(tmp_path, spec):
    """A model of the user's with a ``spec`` attribute of its own saved a ticket whose header
    load_ticket refused ("malformed ticket header: spec must be ...")."""
    class Net(nn.Sequential):
        def __init__(self):
            super().__init__(nn.Linear(4, 3))
            self.spec = spec

    model = ln.convert(Net(), sparsity=0.5, seed=0)
    save_ticket(model, tmp_path / "t.ticket")
    assert_same_ticket(model, load_ticket(tmp_path / "t.ticket", model=Net()), VECTORS[:, :4])


def test_convert_arguments_of_numpy_types_are_recorded_as_numbers(tmp_path):
    """numpy scalars and fractions are numbers: the layers are built from, and the ticket
    records, the same Python number (np.float32 / Fraction / np.int64 made the ticket
    unsaveable after training)."""
    from fractions import Fraction

    import numpy as np

    for options in (dict(sparsity=np.float32(0.3)), dict(sparsity=Fraction(1, 3)),
                    dict(sparsity=0.5, structure="subsetsum", pairs=np.int64(3))):
        model = ln.convert(nn.Sequential(nn.Linear(12, 5)), seed=0, **options)
        save_ticket(model, tmp_path / "t.ticket")
        loaded = load_ticket(tmp_path / "t.ticket", model=nn.Sequential(nn.Linear(12, 5)))
        assert_same_ticket(model, loaded, VECTORS)
        assert [m.kept for m in ln.masked_weights(loaded)] == [
            round((1 - float(options["sparsity"])) * m.weight.numel())
            for m in ln.masked_weights(loaded)]


def test_a_part_of_a_converted_model_says_to_convert_before_loading(tmp_path):
    """convert() is recorded on the model it was called on: the ticket of a part of it has no
    call to replay, and a plain model to load it into is told so (was: "has no mask ... saved
    from another architecture"); the part converted as before loads bit for bit."""
    def wrapped():
        torch.manual_seed(0)
        return nn.ModuleDict({"net": nn.Sequential(nn.Linear(12, 5))})

    model = ln.convert(wrapped(), sparsity=0.5, seed=0)
    save_ticket(model["net"], tmp_path / "t.ticket")
    torch.manual_seed(0)
    with pytest.raises(TicketError, match="no subnet layers and the ticket records no convert"):
        load_ticket(tmp_path / "t.ticket", model=nn.Sequential(nn.Linear(12, 5)))
    part = ln.convert(wrapped(), sparsity=0.5, seed=0)["net"]
    assert_same_ticket(model["net"], load_ticket(tmp_path / "t.ticket", model=part), VECTORS)


def test_model_without_subnet_layers_is_refused(tmp_path):
    with pytest.raises(ValueError, match="no subnet"):
        save_ticket(nn.Sequential(nn.Linear(3, 2)), tmp_path / "t.ticket")


def test_a_checkpoint_loaded_as_a_ticket_is_named_as_one(tmp_path):
    """A Lightning .ckpt given to load_ticket was "not a lotterynet ticket (bad magic
    b'PK\\x03\\x04...')": what torch.save writes, a zip archive, is named, and how to load it."""
    torch.save({"state_dict": build_model("ticket_test_mlp", sparsity=0.5, seed=0).state_dict()},
               tmp_path / "last.ckpt")
    with pytest.raises(TicketError, match=r"last\.ckpt: not a lotterynet ticket but a zip "
                                          r"archive, as torch\.save writes: a checkpoint\? load "
                                          r"it with torch\.load, or a Lightning one with "
                                          r"EdgePopupModule\.load_from_checkpoint"):
        load_ticket(tmp_path / "last.ckpt")
