"""TACQConfig.wide_rows: rows stored with one bit more, chosen by mean score
(python/tacq_ext/row_widths.py), the RowSplitLinear that holds them, and
their checkpoints."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, LlamaForCausalLM

import tacq_ext
from tacq_ext import QuantizedLinear, RowSplitLinear, TACQConfig, reference
from tacq_ext.checkpoint_checks import file_sha256
from tacq_ext.gptq import gptq_quantize
from tacq_ext.row_widths import gptq_rows, wide_row_bits
from tacq_ext.sweep import ScoreBank, SweepGrid, stored_bits_per_weight

from method_fixtures import assert_compiled_decoding_matches_eager, copy_model, lm_batch, tiny_llama


def _random_part(gen, N, K, bits, group_size=-1, kept_per_row=2):
    codes = torch.randint(0, 2**bits, (N, K), generator=gen, dtype=torch.uint8)
    G = 1 if group_size == -1 else K // group_size
    scale = (torch.rand(N, G, generator=gen) * 0.1 + 0.01).half().float()
    zero = torch.randint(0, 2**bits, (N, G), generator=gen).float()
    keep = torch.zeros(N, K, dtype=torch.bool)
    for r in range(N):
        keep[r, torch.randperm(K, generator=gen)[:kept_per_row]] = True
    weight = torch.randn(N, K, generator=gen)
    return QuantizedLinear.from_quantized(codes, scale, zero, weight, keep, bits, group_size)


def _split(gen, row_bits, K=96, group_size=32, bias=True):
    parts = [_random_part(gen, int((row_bits == b).sum()), K, b, group_size) for b in sorted(set(row_bits.tolist()))]
    b = torch.randn(len(row_bits), generator=gen) if bias else None
    return RowSplitLinear(parts, row_bits, b)


def _dense_reference(layer: RowSplitLinear) -> torch.Tensor:
    """fp64 [N, K] from each part's tensors by the reference oracles, rows put back in place."""
    W = torch.empty(layer.out_features, layer.in_features, dtype=torch.float64)
    for p in layer.parts:
        part = reference.dequantize(p.packed, p.scale, p.zero, p.bits, p.group_size, p.in_features).double()
        part += reference.csr_to_dense(p.row_ptr, p.col_idx, p.values, p.out_features, p.in_features).double()
        W[(layer.row_bits == p.bits).nonzero().flatten()] = part
    return W


@pytest.mark.parametrize("shape", [(1, 96), (5, 96), (2, 3, 96), (17, 96)])
def test_row_split_linear_puts_every_row_back_in_place(gen, shape):
    row_bits = torch.tensor([2, 3, 3, 2, 2, 3, 2, 2, 3, 2, 4, 2], dtype=torch.uint8)
    layer = _split(gen, row_bits)
    x = torch.randn(*shape, generator=gen)
    expected = x.double() @ _dense_reference(layer).T + layer.bias.double()
    torch.testing.assert_close(layer(x).double(), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer.dense_weight().double(), _dense_reference(layer), rtol=0, atol=1e-6)


def test_row_split_linear_follows_a_replaced_row_bits(gen):
    """The gather index is rebuilt when row_bits is replaced (loading does that)."""
    layer = _split(gen, torch.tensor([2, 3, 2, 3], dtype=torch.uint8), bias=False)
    x = torch.randn(2, 96, generator=gen)
    before = layer(x)
    layer.row_bits = torch.tensor([3, 2, 3, 2], dtype=torch.uint8)
    torch.testing.assert_close(layer(x), before[:, [1, 0, 3, 2]])


def test_row_split_linear_compiles_as_one_graph_and_moves(gen):
    """No data-dependent shape in forward (the gather index is built when
    row_bits is set or the module moves), so fullgraph compiles it."""
    layer = _split(gen, torch.tensor([3, 2, 2, 3, 2, 4], dtype=torch.uint8))
    x = torch.randn(2, 3, 96, generator=gen)
    compiled = torch.compile(layer, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(x), layer(x))
    moved = layer.to(torch.bfloat16)  # the bias casts, the format and the index stay
    assert moved.row_bits.dtype == torch.uint8 and moved.parts[0].packed.dtype == torch.int32
    torch.testing.assert_close(moved(x.bfloat16()).float(), layer(x), rtol=2e-2, atol=2e-2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_row_split_linear_on_cuda_matches_the_cpu(gen):
    """On CUDA the rows go back in place with torch's index_select (gather_columns is CPU-only)."""
    layer = _split(gen, torch.tensor([2, 3, 3, 2, 2, 3, 2, 2], dtype=torch.uint8))
    x = torch.randn(5, 96, generator=gen)
    expected = layer(x)
    layer.to("cuda")  # in place
    assert layer.gather_index().is_cuda
    torch.testing.assert_close(layer(x.cuda()).cpu(), expected, rtol=1e-4, atol=1e-4)


def test_row_split_linear_on_meta_says_to_load_first():
    part = QuantizedLinear(96, 2, 2, -1, device="meta")
    layer = RowSplitLinear([part], torch.empty(2, dtype=torch.uint8, device="meta"))
    with pytest.raises(RuntimeError, match="row_bits is still on the meta device"):
        layer.gather_index()


def test_row_split_linear_refuses_inconsistent_parts(gen):
    two, three = _random_part(gen, 3, 96, 2), _random_part(gen, 2, 96, 3)
    with pytest.raises(ValueError, match="row_bits gives 2 rows 2 bits, the 2-bit part holds 3"):
        RowSplitLinear([two, three], torch.tensor([2, 2, 3, 3, 3], dtype=torch.uint8))
    with pytest.raises(ValueError, match="row_bits holds widths \\[4\\] that no part stores"):
        RowSplitLinear([two, three], torch.tensor([2, 2, 2, 3, 4], dtype=torch.uint8))
    with pytest.raises(ValueError, match="row_bits must be a uint8 vector"):
        RowSplitLinear([two, three], torch.tensor([2, 2, 2, 3, 3]))
    with pytest.raises(ValueError, match="widths must be distinct and increasing"):
        RowSplitLinear([three, two], torch.tensor([2, 2, 2, 3, 3], dtype=torch.uint8))
    with pytest.raises(ValueError, match="share in_features"):
        RowSplitLinear([two, _random_part(gen, 2, 64, 3)], torch.tensor([2, 2, 2, 3, 3], dtype=torch.uint8))


def test_wide_rows_are_the_largest_mean_scores_within_the_budget(gen):
    scores = {"a": torch.rand(6, 8, generator=gen), "b": torch.rand(5, 16, generator=gen)}
    scores["b"][3] += 1.0  # the largest mean: taken first
    budget = 40
    got = wide_row_bits(scores, budget, 2)
    rows = [(float(s[r].mean()), name, r, s.shape[1]) for name, s in scores.items() for r in range(s.shape[0])]
    rows.sort(key=lambda t: -t[0])
    used, expected = 0, {name: torch.full((s.shape[0],), 2, dtype=torch.uint8) for name, s in scores.items()}
    for _, name, r, K in rows:  # the longest prefix of that order that fits
        if used + K > budget:
            break
        used += K
        expected[name][r] = 3
    for name in scores:
        assert torch.equal(got[name], expected[name])
    assert got["b"][3] == 3


def test_gptq_rows_gives_each_row_what_gptq_at_its_width_gives(gen):
    """GPTQ treats the rows independently: each row of the mixed result is the
    row of a whole-matrix GPTQ at that row's width."""
    N, K = 12, 64
    W = torch.randn(N, K, generator=gen)
    X = torch.randn(256, K, generator=gen)
    H = 2 * X.T @ X / X.shape[0]
    keep = torch.rand(N, K, generator=gen) < 0.05
    row_bits = torch.tensor([2, 3] * 6, dtype=torch.uint8)
    cfg = TACQConfig(bits=2, group_size=32, wide_rows=0.5)
    got = gptq_rows(W, H, cfg, keep, row_bits)
    for bits in (2, 3):
        whole = gptq_quantize(W, H, bits, 32, keep, cfg.damp, cfg.block_size)
        rows = (row_bits == bits).nonzero().flatten()
        for field in ("codes", "scale", "zero", "weight"):
            torch.testing.assert_close(getattr(got, field)[rows], getattr(whole, field)[rows], rtol=0, atol=0)


@pytest.fixture(scope="module")
def wide_model():
    cfg = TACQConfig(bits=2, ratio=0.01, wide_rows=0.15, reference="rtn")
    model = tiny_llama()
    report = tacq_ext.quantize_model(model, [lm_batch(1), lm_batch(2)], cfg, progress=False)
    return model, cfg, report


def test_quantize_model_stores_the_wide_rows_within_budget(wide_model):
    model, cfg, report = wide_model
    splits = [m for m in model.modules() if isinstance(m, RowSplitLinear)]
    layers = [m for m in model.modules() if isinstance(m, QuantizedLinear)]
    assert splits, "no layer got rows of both widths"
    total = sum(m.out_features * m.in_features for m in layers)
    wide = sum(m.out_features * m.in_features for m in layers if m.bits == 3)
    assert 0 < wide <= cfg.wide_rows * total < wide + max(m.in_features for m in layers)
    assert {m.bits for m in layers} == {2, 3}
    assert report.kept == int(cfg.ratio * report.parameters)
    assert sum(m.nnz for m in layers) == report.kept


def test_wide_rows_model_computes_its_dense_weights(wide_model):
    model, _, _ = wide_model
    dense = copy_model(tiny_llama())
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, RowSplitLinear) or (isinstance(m, QuantizedLinear) and ".parts." not in name):
                dense.get_submodule(name).weight.copy_(m.dense_weight())
        ids = lm_batch(5)["input_ids"]
        torch.testing.assert_close(model(input_ids=ids).logits, dense(input_ids=ids).logits, rtol=1e-4, atol=1e-4)


def test_stored_bits_count_every_tensor_of_the_checkpoint(wide_model, tmp_path):
    """The sweep's average bits are the bytes of the quantized tensors (and
    row_bits) in the saved file, over the targeted weights."""
    model, cfg, _ = wide_model
    tacq_ext.save_quantized(model, tmp_path / "q", cfg)
    state = load_file(str(tmp_path / "q" / "model.safetensors"))
    config = json.loads((tmp_path / "q" / "tacq_config.json").read_text())
    stored = sum(8 * state[f"{layer}.{t}"].numel() * state[f"{layer}.{t}"].element_size()
                 for layer in config["layers"] for t in ("packed", "scale", "zero", "row_ptr", "col_idx", "values"))
    stored += sum(8 * state[f"{split}.row_bits"].numel() for split in config["row_splits"])
    weights = sum(s["in_features"] * s["out_features"] for s in config["layers"].values())
    assert stored_bits_per_weight(model) == pytest.approx(stored / weights, rel=1e-12)


def _skeleton(model):
    with torch.device("meta"):
        return LlamaForCausalLM(model.config).eval()


def test_checkpoint_round_trips_through_both_loaders(wide_model, tmp_path):
    model, cfg, _ = wide_model
    tacq_ext.save_quantized(model, tmp_path / "q", cfg)
    ids = lm_batch(6)["input_ids"]
    with torch.no_grad():
        expected = model(input_ids=ids).logits
        loaded = tacq_ext.load_quantized(tmp_path / "q", _skeleton(model))
        assert torch.equal(loaded(input_ids=ids).logits, expected)
        hf = AutoModelForCausalLM.from_pretrained(tmp_path / "q")
        assert any(isinstance(m, RowSplitLinear) for m in hf.modules())
        assert torch.equal(hf(input_ids=ids).logits, expected)
        hf.save_pretrained(tmp_path / "again")
        again = tacq_ext.load_quantized(tmp_path / "again", _skeleton(model))
        assert torch.equal(again(input_ids=ids).logits, expected)


def _saved_copy(wide_model, tmp_path) -> Path:
    model, cfg, _ = wide_model
    return tacq_ext.save_quantized(model, tmp_path / "q", cfg)


def _reseal(ckpt: Path, state: dict = None, config: dict = None):
    """Rewrites the weights and/or the config with a matching digest, as a careless hand edit would."""
    weights, file = ckpt / "model.safetensors", ckpt / "tacq_config.json"
    if state is not None:
        save_file(state, str(weights), metadata={"format": "pt", "tacq_format_version": "1"})
    config = config if config is not None else json.loads(file.read_text())
    config.update(weights_bytes=weights.stat().st_size, weights_sha256=file_sha256(weights))
    file.write_text(json.dumps(config))


def _first_split(ckpt: Path):
    config = json.loads((ckpt / "tacq_config.json").read_text())
    return next(iter(config["row_splits"])), config


@pytest.mark.parametrize("loader", ["load_quantized", "from_pretrained"])
def test_tampered_row_bits_are_named(wide_model, tmp_path, loader):
    ckpt = _saved_copy(wide_model, tmp_path)
    split, _ = _first_split(ckpt)
    state = load_file(str(ckpt / "model.safetensors"))
    state[f"{split}.row_bits"] = state[f"{split}.row_bits"].clone()
    state[f"{split}.row_bits"][0] = 4 if int(state[f"{split}.row_bits"][0]) != 4 else 2
    _reseal(ckpt, state=state)
    load = (lambda: tacq_ext.load_quantized(ckpt, _skeleton(wide_model[0]))) if loader == "load_quantized" else (
        lambda: AutoModelForCausalLM.from_pretrained(ckpt))
    with pytest.raises(ValueError, match=f"checkpoint layer '{split}', tensor 'row_bits'"):
        load()


@pytest.mark.parametrize("edit, message", [
    (lambda spec, layers: spec.update(parts=spec["parts"][::-1]), "'parts' must list"),
    (lambda spec, layers: spec.update(out_features=spec["out_features"] + 1), "its parts hold"),
    (lambda spec, layers: layers[spec["parts"][0]].update(bias=True), "no bias"),
    (lambda spec, layers: spec.update(bias="no"), "needs a boolean 'bias'"),
])
def test_bad_row_split_entries_are_named(wide_model, tmp_path, edit, message):
    ckpt = _saved_copy(wide_model, tmp_path)
    split, config = _first_split(ckpt)
    edit(config["row_splits"][split], config["layers"])
    _reseal(ckpt, config=config)
    with pytest.raises(ValueError, match=f"row split '{split}'.*{message}|{message}"):
        tacq_ext.load_quantized(ckpt, _skeleton(wide_model[0]))


def test_wide_rows_options_are_checked():
    with pytest.raises(ValueError, match="wide_rows applies to method 'tacq' at 2 or 3 bits"):
        TACQConfig(method="gptq", wide_rows=0.1)
    with pytest.raises(ValueError, match="wide_rows applies to method 'tacq' at 2 or 3 bits"):
        TACQConfig(bits=4, wide_rows=0.1)
    with pytest.raises(ValueError, match="wide_rows must be in \\[0, 1\\)"):
        TACQConfig(wide_rows=1.0)


def test_wide_rows_without_kept_weights_still_uses_the_scores():
    model = tiny_llama()
    cfg = TACQConfig(bits=2, ratio=0.0, wide_rows=0.2, reference="rtn")
    report = tacq_ext.quantize_model(model, [lm_batch(1)], cfg, progress=False)
    assert report.kept == 0
    assert any(isinstance(m, RowSplitLinear) for m in model.modules())


def test_sweep_reuses_the_paper_scores_for_wide_rows():
    """wide_rows is a grid dimension of tacq's; it changes the selection, not
    the reference: no second reference pass."""
    grid = SweepGrid(methods=["gptq", "tacq"], bits=[2], group_sizes=[-1], ratios=[0.01], wide_rows=[0.0, 0.1])
    configs = [(cfg.method, cfg.wide_rows) for _, cfg in grid.configs()]
    assert configs == [("gptq", 0.0), ("tacq", 0.0), ("tacq", 0.1)]
    bank = ScoreBank(tiny_llama(), [lm_batch(1)], ["tacq"], progress=False)
    paper, wide = (cfg for _, cfg in grid.configs() if cfg.method == "tacq")
    paper.reference = wide.reference = "rtn"
    assert bank.scores(paper) is bank.scores(wide)
    assert bank.gradient_passes == 1


def test_sweep_command_takes_wide_rows(tmp_path, capsys):
    from tacq_ext import cli

    out = tmp_path / "sweep"
    assert cli.main(["sweep", "--demo", "--demo-metric", "loss", "--limit", "8", "--calib-size", "4", "--methods",
                     "tacq", "--bits", "2", "--group-sizes=-1", "--ratios", "0", "--wide-rows", "0,0.2",
                     "--reference", "rtn", "--quiet", "--out", str(out)]) == 0
    points = json.loads((out / "sweep.json").read_text())["points"]
    assert [(p["method"], p["wide_rows"]) for p in points] == [("fp", 0.0), ("tacq", 0.0), ("tacq", 0.2)]
    assert points[2]["avg_bits"] > points[1]["avg_bits"] + 0.2
    assert "| wide rows |" in (out / "sweep.md").read_text()
    assert cli.main(["sweep", "--demo", "--wide-rows", "x", "--out", str(out)]) == 2
    assert "--wide-rows: expected a comma-separated list" in capsys.readouterr().err


def test_static_cache_decoding_of_a_wide_rows_checkpoint_compiles_without_graph_breaks(wide_model, tmp_path):
    model, cfg, _ = wide_model
    tacq_ext.save_quantized(model, tmp_path / "q", cfg)
    assert_compiled_decoding_matches_eager(AutoModelForCausalLM.from_pretrained(tmp_path / "q"))
