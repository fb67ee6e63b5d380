"""quantize_model -> save_quantized -> load_quantized, every method and bit
width; budgets, average bits, QuantizedLinear, and bad input."""

import json
import math

import pytest
import torch
import torch.nn as nn

import tacq_ext
from tacq_ext import QuantizedLinear, TACQConfig, ops
from tacq_ext.qlinear import average_bits

from method_fixtures import copy_model, lm_batch, tiny_llama

METHODS = ["rtn", "gptq", "spqr_like", "squeezellm_like", "tacq"]


@pytest.fixture(scope="module")
def base_model():
    return tiny_llama()


@pytest.fixture(scope="module")
def calib():
    return [lm_batch(10), lm_batch(11)]


@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("method", METHODS)
def test_quantize_save_load_same_logits(tmp_path, base_model, calib, method, bits):
    model = copy_model(base_model)
    cfg = TACQConfig(bits=bits, group_size=32 if bits == 4 else -1, ratio=0.01, method=method)
    report = tacq_ext.quantize_model(model, calib, cfg, progress=False)
    ids = lm_batch(99)["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    tacq_ext.save_quantized(model, tmp_path / "q", cfg=cfg, report=report)

    skeleton = copy_model(base_model)
    loaded = tacq_ext.load_quantized(tmp_path / "q", skeleton)
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=ids).logits, logits)
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name

    # budget and bits (docs/method.md)
    P = sum(l.shape[0] * l.shape[1] for l in report.layers)
    kept_expected = math.floor(0.01 * P) if method in ("spqr_like", "squeezellm_like", "tacq") else 0
    assert report.kept == kept_expected
    q_layers = [m for m in loaded.modules() if isinstance(m, QuantizedLinear)]
    assert len(q_layers) == 14 and sum(m.nnz for m in q_layers) == kept_expected
    for layer in report.layers:
        N, K = layer.shape
        G = 1 if cfg.group_size == -1 else K // cfg.group_size
        assert layer.avg_bits == pytest.approx(average_bits(N, K, bits, G, layer.kept))
    stored_bits = sum(m.out_features * m.in_features * bits + 32 * m.scale.numel() + 48 * m.nnz
                      + 32 * m.row_ptr.numel() for m in q_layers)
    assert report.avg_bits == pytest.approx(stored_bits / P)
    config = json.loads((tmp_path / "q" / "tacq_config.json").read_text())
    assert config["method"] == method and config["bits"] == bits and config["format_version"] == 1


def test_scores_are_reused_without_gradients(base_model, calib, monkeypatch):
    """Changing the budget with scores= must not run the gradient pass again."""
    cfg = TACQConfig(bits=2, ratio=0.01)
    scores = tacq_ext.compute_saliency(copy_model(base_model), calib, cfg, progress=False)

    def no_gradients(*args, **kwargs):
        raise AssertionError("gradients were recomputed")

    monkeypatch.setattr(tacq_ext.pipeline, "accumulate_gradient_stats", no_gradients)
    report = tacq_ext.quantize_model(copy_model(base_model), calib, TACQConfig(bits=2, ratio=0.02),
                                     scores=scores, progress=False)
    assert report.kept == math.floor(0.02 * report.parameters)


def test_tacq_keeps_the_highest_scores(base_model, calib):
    cfg = TACQConfig(bits=2, ratio=0.005, reference="rtn")
    scores = tacq_ext.compute_saliency(copy_model(base_model), calib, cfg, progress=False)
    model = copy_model(base_model)
    tacq_ext.quantize_model(model, calib, cfg, scores=scores, progress=False)
    flat = torch.cat([s.flatten() for s in scores.values()])
    k = math.floor(0.005 * flat.numel())
    threshold = torch.topk(flat, k).values.min()
    modules = dict(model.named_modules())
    for name, s in scores.items():
        q = modules[name]
        rows = torch.repeat_interleave(torch.arange(q.out_features), (q.row_ptr[1:] - q.row_ptr[:-1]).long())
        assert torch.all(s[rows, q.col_idx.long()] >= threshold)


def test_quantized_linear_matches_fake_quant_and_compiles():
    torch.manual_seed(0)
    W = torch.randn(48, 96)
    codes, scale, zero = ops.quantize(W, 3, 32)
    keep = torch.rand(48, 96) < 0.02
    codes = torch.where(keep, zero.repeat_interleave(32, 1).to(torch.uint8), codes)
    layer = QuantizedLinear.from_quantized(codes, scale.half().float(), zero, W, keep, 3, 32, torch.randn(48))
    fake = layer.dense_weight()
    assert torch.allclose(fake[keep], W[keep], atol=1e-2)  # kept weights in fp16
    for rows in (1, 5, 16, 40):
        x = torch.randn(rows, 96)
        torch.testing.assert_close(layer(x), torch.nn.functional.linear(x, fake, layer.bias), rtol=1e-4, atol=1e-4)
    compiled = torch.compile(layer, fullgraph=True, backend="eager")
    x = torch.randn(2, 3, 96)
    torch.testing.assert_close(compiled(x), layer(x))


def test_bad_input(tmp_path, base_model, calib):
    with pytest.raises(ValueError, match="bits must be 2, 3 or 4"):
        TACQConfig(bits=1)
    with pytest.raises(ValueError, match=r"ratio must be in \[0, 1\)"):
        TACQConfig(ratio=1.0)
    with pytest.raises(ValueError, match="no nn.Linear layers"):
        tacq_ext.quantize_model(nn.Sequential(nn.ReLU()), calib, TACQConfig(), progress=False)
    with pytest.raises(ValueError, match="calibration data is empty"):
        tacq_ext.quantize_model(copy_model(base_model), [], TACQConfig(), progress=False)
    masked = lm_batch(12)
    masked["labels"][:] = -100
    with pytest.raises(ValueError, match="at least one label"):
        tacq_ext.quantize_model(copy_model(base_model), [masked], TACQConfig(), progress=False)

    model = copy_model(base_model)
    cfg = TACQConfig(bits=2, method="rtn")
    tacq_ext.quantize_model(model, calib, cfg, progress=False)
    out = tacq_ext.save_quantized(model, tmp_path / "q", cfg=cfg)
    other = tiny_llama()
    other.model.layers[0].mlp.up_proj = nn.Linear(64, 128, bias=False)
    with pytest.raises(ValueError, match="skeleton"):
        tacq_ext.load_quantized(out, other)
    (out / "tacq_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        tacq_ext.load_quantized(out, copy_model(base_model))


@pytest.mark.parametrize("method", ["tacq", "spqr_like"])
def test_progress_false_silences_every_bar(base_model, calib, capfd, method):
    cfg = TACQConfig(bits=2, ratio=0.01, method=method)
    tacq_ext.quantize_model(copy_model(base_model), calib, cfg, progress=False)
    assert capfd.readouterr().err == ""
    tacq_ext.quantize_model(copy_model(base_model), calib, cfg, progress=True)
    err = capfd.readouterr().err
    for bar in ("reference GPTQ", "gptq blocks", "block inputs", "layers"):
        assert bar in err, bar


@pytest.mark.parametrize("group_size", [-1, 32])
def test_rtn_codes_match_the_stored_scales(group_size):
    """Rows whose fp32 scale fp16 cannot hold (tiny or huge weights) are
    quantized against the clamped, fp16-rounded scale that is stored, so the
    stored layer reconstructs every weight to within half a stored step."""
    torch.manual_seed(0)
    W = torch.randn(4, 64)
    W[0] *= 1e-10   # scale below fp16's smallest subnormal
    W[1] *= 1e7     # scale above fp16's max
    W[2] *= 1e-3    # ordinary row, scale not exactly an fp16 value
    layer = nn.Linear(64, 4, bias=False)
    layer.weight.data.copy_(W)
    model = nn.Sequential(layer)
    tacq_ext.quantize_model(model, [torch.randn(2, 64)], TACQConfig(bits=2, group_size=group_size, method="rtn"),
                            loss_fn=lambda m, x: m(x).sum(), progress=False)
    q = model[0]
    glen = 64 if group_size == -1 else group_size
    step = q.scale.float().repeat_interleave(glen, dim=1)
    lo = q.scale.float() * (0 - q.zero.float())
    hi = q.scale.float() * (3 - q.zero.float())
    inside = (W >= lo.repeat_interleave(glen, dim=1)) & (W <= hi.repeat_interleave(glen, dim=1))
    err = (q.dense_weight() - W).abs()
    assert bool((err[inside] <= 0.5 * step[inside] * (1 + 1e-5)).all())
    assert bool((err[0] <= 0.5 * 2.0**-24).all())


@pytest.mark.parametrize("method", ["tacq", "squeezellm_like"])
def test_activation_checkpointing_gives_the_same_model(base_model, calib, method):
    cfg = TACQConfig(bits=2, ratio=0.01, method=method, reference="rtn")
    plain, checkpointed = copy_model(base_model), copy_model(base_model)
    tacq_ext.quantize_model(plain, calib, cfg, progress=False)
    tacq_ext.quantize_model(checkpointed, calib, cfg, progress=False, activation_checkpointing=True)
    buffers = dict(checkpointed.named_buffers())
    for name, buffer in plain.named_buffers():
        assert torch.equal(buffer, buffers[name]), name
