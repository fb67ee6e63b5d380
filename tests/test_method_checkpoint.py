"""Quantized checkpoints: loading into a skeleton on the meta device, and
integrity (sha256, truncation, foreign files, every quantized tensor checked,
nothing unpickled)."""

import copy
import json
import math
import pickle
import shutil

import pytest
import torch
import transformers
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, LlamaForCausalLM

import tacq_ext
from tacq_ext import TACQConfig
from tacq_ext.checkpoint_checks import file_sha256
from tacq_ext.qlinear import QUANTIZED_TENSORS

from method_fixtures import copy_model, lm_batch, tiny_llama

LAYER = "model.layers.1.mlp.down_proj"


def quantize_and_save(model, out, method="tacq", ratio=0.05, bits=3):
    cfg = TACQConfig(bits=bits, ratio=ratio, method=method, reference="rtn")
    report = tacq_ext.quantize_model(model, [lm_batch(30), lm_batch(31)], cfg, progress=False)
    tacq_ext.save_quantized(model, out, cfg=cfg, report=report)
    return model


def meta_skeleton(config):
    with torch.device("meta"):
        return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """(checkpoint directory, the in-memory quantized model)."""
    out = tmp_path_factory.mktemp("ckpt") / "q"
    return out, quantize_and_save(tiny_llama(), out)


@pytest.fixture
def ckpt(saved, tmp_path):
    """A private copy of the checkpoint, free to damage."""
    return shutil.copytree(saved[0], tmp_path / "q")


@pytest.mark.parametrize("tied", [False, True])
def test_meta_skeleton_gives_identical_logits(tmp_path, tied):
    base = tiny_llama()
    if tied:
        base.config.tie_word_embeddings = True
        base = copy_model(base)
        base.tie_weights()
    model = quantize_and_save(base, tmp_path / "q", method="rtn" if tied else "tacq")
    ids = lm_batch(32)["input_ids"]
    skeleton = meta_skeleton(model.config)
    assert skeleton.model.rotary_emb.inv_freq.is_meta
    loaded = tacq_ext.load_quantized(tmp_path / "q", skeleton)
    for name, t in list(loaded.named_parameters()) + list(loaded.named_buffers()):
        assert not t.is_meta and t.device.type == "cpu", name
    assert torch.equal(loaded.model.rotary_emb.inv_freq, model.model.rotary_emb.inv_freq)
    assert isinstance(loaded.lm_head, tacq_ext.Bf16GemvLinear)  # the loaders' module for unquantized linears
    if tied:
        assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=ids).logits, model(input_ids=ids).logits)
    config = json.loads((tmp_path / "q" / "tacq_config.json").read_text())
    assert "model.rotary_emb.inv_freq" in config["non_persistent_buffers"]


def test_skeleton_dtype_decides_unquantized_tensors(saved):
    path, model = saved
    skeleton = meta_skeleton(model.config).to(torch.bfloat16)
    loaded = tacq_ext.load_quantized(path, skeleton)
    q = loaded.get_submodule(LAYER)
    assert loaded.model.embed_tokens.weight.dtype == torch.bfloat16
    assert q.scale.dtype == torch.float16 and q.values.dtype == torch.float16 and q.packed.dtype == torch.int32
    ids = lm_batch(33)["input_ids"]
    with torch.no_grad():
        ours = loaded(input_ids=ids).logits.float()
        ref = model(input_ids=ids).logits
    assert (ours - ref).abs().max() < 0.05 * ref.abs().max()


def test_skeleton_without_a_buffer_the_checkpoint_lacks_is_an_error(saved):
    path, model = saved
    skeleton = meta_skeleton(model.config)
    skeleton.model.register_buffer("extra", torch.empty(3, device="meta"), persistent=False)
    with pytest.raises(ValueError, match=r"does not provide \['model.extra'\].*meta"):
        tacq_ext.load_quantized(path, skeleton)


# ------------------------------------------------------------------ the weights file


def rewrite_config(ckpt, **changes):
    file = ckpt / "tacq_config.json"
    config = json.loads(file.read_text())
    config.update(changes)
    file.write_text(json.dumps(config))


def refresh_digest(ckpt):
    """As a careless hand edit would: the config made to match the file again."""
    weights = ckpt / "model.safetensors"
    rewrite_config(ckpt, weights_bytes=weights.stat().st_size, weights_sha256=file_sha256(weights))


LOADERS = {
    "load_quantized": lambda ckpt, model: tacq_ext.load_quantized(ckpt, meta_skeleton(model.config)),
    "from_pretrained": lambda ckpt, model: AutoModelForCausalLM.from_pretrained(ckpt),
}


@pytest.fixture(params=list(LOADERS))
def load(request):
    """Each integrity check holds for both ways of loading a checkpoint."""
    return LOADERS[request.param]


def broken_header(load, message):
    """pytest.raises arguments for a file whose safetensors header is broken:
    transformers 4.x reads that header itself, before any quantizer hook runs,
    and fails with its own SafetensorError."""
    if load is LOADERS["from_pretrained"] and int(transformers.__version__.split(".")[0]) < 5:
        return (ValueError, SafetensorError), f"{message}|Error while deserializing header"
    return ValueError, message


def test_truncated_file(ckpt, saved, load):
    data = (ckpt / "model.safetensors").read_bytes()
    (ckpt / "model.safetensors").write_bytes(data[: len(data) - 100])
    errors, message = broken_header(load, r"model.safetensors is truncated or corrupted: \d+ bytes")
    with pytest.raises(errors, match=message):
        load(ckpt, saved[1])


def test_flipped_byte(ckpt, saved, load):
    data = bytearray((ckpt / "model.safetensors").read_bytes())
    data[-7] ^= 0x10
    (ckpt / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="is corrupted or belongs to another checkpoint: its sha256"):
        load(ckpt, saved[1])


def test_weights_of_another_checkpoint(ckpt, saved, tmp_path, load):
    quantize_and_save(tiny_llama(seed=1), tmp_path / "other")
    shutil.copy(tmp_path / "other" / "model.safetensors", ckpt / "model.safetensors")
    with pytest.raises(ValueError, match="another checkpoint|truncated or corrupted"):
        load(ckpt, saved[1])


def test_missing_digest(ckpt, saved, load):
    rewrite_config(ckpt, weights_sha256=None)
    with pytest.raises(ValueError, match="cannot verify the weights file"):
        load(ckpt, saved[1])


@pytest.mark.parametrize("content", ["garbage", "pickle"])
def test_not_safetensors_even_with_a_matching_digest(ckpt, saved, content, monkeypatch, load):
    file = ckpt / "model.safetensors"
    if content == "pickle":
        torch.save({"x": torch.ones(2)}, file)
    else:
        file.write_bytes(b"\xff" * 64)
    refresh_digest(ckpt)
    monkeypatch.setattr(pickle, "load", _no_unpickling)
    monkeypatch.setattr(pickle, "loads", _no_unpickling)
    monkeypatch.setattr(torch, "load", _no_unpickling)
    errors, message = broken_header(load, "model.safetensors is corrupted or truncated")
    with pytest.raises(errors, match=message):
        load(ckpt, saved[1])


def _no_unpickling(*args, **kwargs):
    raise AssertionError("a checkpoint was unpickled")


def test_loading_never_unpickles(saved, monkeypatch, load):
    monkeypatch.setattr(pickle, "load", _no_unpickling)
    monkeypatch.setattr(pickle, "loads", _no_unpickling)
    monkeypatch.setattr(torch, "load", _no_unpickling)
    load(saved[0], saved[1])


def test_bad_layer_entry_in_config(ckpt, saved, load):
    config = json.loads((ckpt / "tacq_config.json").read_text())
    config["layers"][LAYER]["bits"] = 5
    (ckpt / "tacq_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=f"layer '{LAYER}' has bits 5"):
        load(ckpt, saved[1])


# ------------------------------------------------------------------ quantized tensors


def _row_with_two_kept(row_ptr):
    counts = row_ptr[1:] - row_ptr[:-1]
    return int((counts >= 2).nonzero()[0])


def _decreasing_row_ptr(row_ptr):
    r = int((row_ptr[1:-2] > 0).nonzero()[0]) + 1  # an inner pointer above 0, not the last
    row_ptr[r + 1] = row_ptr[r] - 1


def _unsorted_cols(state):
    r = _row_with_two_kept(state[f"{LAYER}.row_ptr"])
    a = int(state[f"{LAYER}.row_ptr"][r])
    cols = state[f"{LAYER}.col_idx"]
    cols[a], cols[a + 1] = cols[a + 1].clone(), cols[a].clone()


def _set(key, index, value):
    def change(state):
        state[f"{LAYER}.{key}"][index] = value
    return change


def _replace(key, fn):
    def change(state):
        state[f"{LAYER}.{key}"] = fn(state[f"{LAYER}.{key}"]).contiguous()
    return change


TAMPERING = {
    "packed dtype": (_replace("packed", lambda t: t.long()), "packed", "dtype must be torch.int32"),
    "packed shape": (_replace("packed", lambda t: t[:, :-1]), "packed", "shape must be"),
    "scale shape": (_replace("scale", lambda t: t[:-1]), "scale", "shape must be"),
    "scale dtype": (_replace("scale", lambda t: t.float()), "scale", "dtype must be torch.float16"),
    "scale inf": (_set("scale", (0, 0), math.inf), "scale", "finite and > 0"),
    "scale nan": (_set("scale", (3, 0), math.nan), "scale", "finite and > 0"),
    "scale zero": (_set("scale", (1, 0), 0.0), "scale", "finite and > 0"),
    "zero range": (_set("zero", (0, 0), 8.0), "zero", r"integer in \[0, 7\]"),
    "zero fraction": (_set("zero", (0, 0), 1.5), "zero", "integer in"),
    "row_ptr start": (_set("row_ptr", 0, 1), "row_ptr", "start at 0 and end at nnz"),
    "row_ptr end": (_set("row_ptr", -1, 1), "row_ptr", "start at 0 and end at nnz"),
    "row_ptr decreasing": (lambda s: _decreasing_row_ptr(s[f"{LAYER}.row_ptr"]), "row_ptr", "non-decreasing"),
    "col_idx range": (_set("col_idx", 0, 96), "col_idx", r"column index 96 at position 0 is outside \[0, 96\)"),
    "col_idx negative": (_set("col_idx", 1, -3), "col_idx", "outside"),
    "col_idx unsorted": (_unsorted_cols, "col_idx", "not strictly increasing"),
    "values nan": (_set("values", 0, math.nan), "values", "finite"),
    "values missing": (lambda s: s.pop(f"{LAYER}.values"), "values", "missing from the weights file"),
}


@pytest.mark.parametrize("case", list(TAMPERING))
def test_tampered_quantized_tensor(ckpt, saved, case, load):
    change, tensor, message = TAMPERING[case]
    weights = ckpt / "model.safetensors"
    state = load_file(str(weights))
    assert int(state[f"{LAYER}.row_ptr"][-1]) >= 4, "the fixture layer needs kept weights"
    change(state)
    save_file(state, str(weights))
    refresh_digest(ckpt)
    with pytest.raises(ValueError, match=f"checkpoint layer '{LAYER}', tensor '{tensor}': .*{message}"):
        load(ckpt, saved[1])


# ------------------------------------------------------------------ moving a quantized model

def _assert_format_dtypes(model, device="cpu"):
    layers = [m for m in model.modules() if isinstance(m, tacq_ext.QuantizedLinear)]
    assert layers
    for q in layers:
        assert q.packed.dtype == q.row_ptr.dtype == q.col_idx.dtype == torch.int32
        assert q.scale.dtype == q.zero.dtype == q.values.dtype == torch.float16
        assert all(t.device.type == device for t in q.buffers())


@pytest.mark.parametrize("loader", ["load_quantized", "from_pretrained"])
def test_loaded_layers_each_read_one_stored_buffer(saved, loader):
    """Both loaders leave every quantized layer's six tensors as views of one
    buffer, which forward (and a compiled graph) hands to mixed_gemv_stored."""
    path, model = saved
    loaded = (tacq_ext.load_quantized(path, meta_skeleton(model.config)) if loader == "load_quantized"
              else AutoModelForCausalLM.from_pretrained(path))
    layers = [m for m in loaded.modules() if isinstance(m, tacq_ext.QuantizedLinear)]
    assert layers
    for q in layers:
        stored = q._buffers.stored
        assert stored is not None and stored.dtype == torch.uint8
        for name in QUANTIZED_TENSORS:
            assert q._buffers[name].untyped_storage().data_ptr() == stored.untyped_storage().data_ptr(), name


def test_saving_writes_the_layers_own_tensors(saved, tmp_path, monkeypatch):
    """save_quantized hands safetensors the views of each layer's stored
    buffer, not copies (a second copy of the model in memory while saving)."""
    from tacq_ext import serialization

    _, model = saved
    written = {}
    real_save_file = serialization.save_file
    monkeypatch.setattr(serialization, "save_file", lambda tensors, *a, **k: (written.update(tensors),
                                                                              real_save_file(tensors, *a, **k)))
    tacq_ext.save_quantized(model, tmp_path / "again", TACQConfig(bits=3))
    layers = {n: m for n, m in model.named_modules() if isinstance(m, tacq_ext.QuantizedLinear)}
    assert layers
    for name, q in layers.items():
        for k in QUANTIZED_TENSORS:
            assert written[f"{name}.{k}"].data_ptr() == q._buffers[k].data_ptr(), f"{name}.{k}"


class ShortReads:
    """An unbuffered file whose reads return at most 7 bytes, as one read of
    more than about 2 GiB does on Linux."""

    def __init__(self, raw):
        self.raw = raw

    def readinto(self, target):
        return self.raw.readinto(memoryview(target)[:7])

    def __getattr__(self, name):
        return getattr(self.raw, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.raw.close()


def test_short_reads_still_fill_every_layer(saved, monkeypatch):
    """The loaders read each quantized tensor to its end however many reads
    the file takes; logits as from the in-memory model."""
    import builtins

    from tacq_ext import weights_reader

    path, model = saved
    real_open = builtins.open
    monkeypatch.setattr(weights_reader, "open", lambda *a, **k: ShortReads(real_open(*a, **k)), raising=False)
    loaded = tacq_ext.load_quantized(path, meta_skeleton(model.config))
    ids = lm_batch(5)["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=0)


@pytest.mark.parametrize("from_checkpoint", [False, True], ids=["quantized", "loaded"])
def test_casting_a_quantized_model_keeps_its_format(saved, from_checkpoint):
    path, model = saved
    model = tacq_ext.load_quantized(path, meta_skeleton(model.config)) if from_checkpoint else copy.deepcopy(model)
    ids = lm_batch(34)["input_ids"]
    expected = {}
    for cast, dtype in (("bfloat16", torch.bfloat16), ("half", torch.float16), ("float", torch.float32)):
        getattr(model, cast)()
        _assert_format_dtypes(model)
        assert model.model.embed_tokens.weight.dtype == dtype
        with torch.no_grad():
            logits = model(input_ids=ids).logits
        assert logits.dtype == dtype and torch.isfinite(logits).all()
        expected[dtype] = logits
    model.to(torch.bfloat16)
    _assert_format_dtypes(model)
    skeleton = meta_skeleton(model.config).to(torch.bfloat16)
    reference = tacq_ext.load_quantized(path, skeleton)
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, reference(input_ids=ids).logits)
    model.to("meta")
    _assert_format_dtypes(model, "meta")


def test_module_casts_reach_the_bias_only():
    torch.manual_seed(0)
    layer = torch.nn.Linear(64, 8)
    codes, scale, zero = tacq_ext.ops.quantize(layer.weight.detach(), 3, 32)
    keep = torch.zeros(8, 64, dtype=torch.bool)
    keep[2, 5] = True
    q = tacq_ext.QuantizedLinear.from_quantized(codes, scale, zero, layer.weight.detach(), keep, 3, 32,
                                                bias=layer.bias.detach())
    before = {n: t.clone() for n, t in q.named_buffers()}
    q.to(torch.bfloat16)
    assert q.bias.dtype == torch.bfloat16
    for name in ("packed", "scale", "zero", "row_ptr", "col_idx", "values"):
        assert torch.equal(getattr(q, name), before[name]), f"{name} changed under .to(bfloat16)"
    x = torch.randn(3, 64)
    y = q(x.bfloat16())
    assert y.dtype == torch.bfloat16
    q.float()
    torch.testing.assert_close(y.float(), q(x), rtol=0.02, atol=0.02)


def test_interrupted_save_leaves_nothing_that_looks_complete(saved, ckpt, tmp_path, monkeypatch):
    """save_quantized writes into a hidden directory next to the target and
    moves the files in at the end; a failure before that leaves the target as
    it was (new) or without tacq_config.json (existing), and no staging files."""
    def fail(*args, **kwargs):
        raise OSError("disk full")

    model = saved[1]
    cfg = TACQConfig(bits=3, ratio=0.05, method="tacq", reference="rtn")
    monkeypatch.setattr(tacq_ext.serialization, "file_sha256", fail)
    with pytest.raises(OSError, match="disk full"):
        tacq_ext.save_quantized(model, tmp_path / "new", cfg=cfg)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q"]
    monkeypatch.undo()
    monkeypatch.setattr(tacq_ext.serialization.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        tacq_ext.save_quantized(model, ckpt, cfg=cfg)
    assert not (ckpt / "tacq_config.json").exists()
    with pytest.raises(FileNotFoundError, match="not a tacq checkpoint"):
        tacq_ext.load_quantized(ckpt, copy_model(tiny_llama()))
    monkeypatch.undo()
    tacq_ext.save_quantized(model, ckpt, cfg=cfg)  # over an existing directory: loads again
    tacq_ext.load_quantized(ckpt, copy_model(tiny_llama()))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q"]


def test_int8_activations_switch_every_layer(saved):
    """set_int8_activations reaches every QuantizedLinear; a layer then equals
    mixed_gemv with x_int8, the model's logits move by int8 rounding only, and
    the switch compiles without graph breaks."""
    _, model = saved
    model = copy.deepcopy(model)
    layers = [m for m in model.modules() if isinstance(m, tacq_ext.QuantizedLinear)]
    ids = torch.randint(0, model.config.vocab_size, (1, 12), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        exact = model(input_ids=ids).logits
        assert tacq_ext.set_int8_activations(model) == len(layers) > 0
        assert all(m.x_int8 for m in layers)
        rounded = model(input_ids=ids).logits
        layer = layers[0]
        x = torch.randn(3, layer.in_features)
        expected = tacq_ext.ops.mixed_gemv(x, layer.packed, layer.scale, layer.zero, layer.bits, layer.group_size,
                                           layer.row_ptr, layer.col_idx, layer.values, x_int8=True)
        torch.testing.assert_close(layer(x), expected + (0 if layer.bias is None else layer.bias), rtol=0, atol=0)
        compiled = torch.compile(layer, fullgraph=True)
        torch.testing.assert_close(compiled(x), layer(x))
    assert not torch.equal(exact, rounded)
    assert float((rounded - exact).abs().max() / exact.abs().max()) < 0.05
    assert tacq_ext.set_int8_activations(model, False) == len(layers) and not any(m.x_int8 for m in layers)
