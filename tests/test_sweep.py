"""tacq sweep: scores computed once per sweep, average stored bits against an
independent count from a saved checkpoint, the Pareto front, the outputs and
the command line on a local Hugging Face directory and on the demo."""

import json
import shutil
import struct
import sys

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

import tacq_ext
from tacq_ext import cli, pipeline, sweep as sweep_module
from tacq_ext.config import TACQConfig
from tacq_ext.demo.model import ASSET_DIR
from tacq_ext.qlinear import QuantizedLinear
from tacq_ext.saliency import default_loss
from tacq_ext.sweep import SweepGrid, SweepPoint, mark_pareto, stored_bits_per_weight, sweep
from tacq_ext.sweep_report import write_sweep

from method_fixtures import copy_model, lm_batch, tiny_llama

CALIB = [lm_batch(1), lm_batch(2)]
HELD_OUT = lm_batch(9)


def _loss(model):
    with torch.no_grad():
        return {"loss": float(default_loss(model, HELD_OUT))}


def _formula_bits(model, kept: int, bits: int, group_size: int) -> float:
    """docs/method.md, Average bits, summed over the target layers."""
    layers = [m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and ".layers." in f".{n}"]
    P = sum(m.out_features * m.in_features for m in layers)
    groups = lambda m: 1 if group_size == -1 else m.in_features // group_size
    stored = sum(m.out_features * m.in_features * bits + 32 * m.out_features * groups(m) + 32 * (m.out_features + 1)
                 for m in layers) + 48 * kept
    return stored / P


@pytest.fixture(scope="module")
def swept():
    """One sweep over every method, two bit widths, two group sizes and two
    ratios, counting the gradient and reference passes it runs."""
    model = tiny_llama()
    calls = {"gradient": [], "reference": 0}
    real_stats, real_reference = sweep_module.accumulate_gradient_stats, sweep_module.reference_pass

    def counting_stats(*args, **kwargs):
        calls["gradient"].append(kwargs.get("squared", False))
        return real_stats(*args, **kwargs)

    def counting_reference(*args, **kwargs):
        calls["reference"] += 1
        return real_reference(*args, **kwargs)

    def no_recompute(*args, **kwargs):
        raise AssertionError("quantize_model recomputed gradient statistics")

    mp = pytest.MonkeyPatch()
    mp.setattr(sweep_module, "accumulate_gradient_stats", counting_stats)
    mp.setattr(sweep_module, "reference_pass", counting_reference)
    mp.setattr(pipeline, "accumulate_gradient_stats", no_recompute)
    try:
        grid = SweepGrid(methods=list(tacq_ext.config.METHODS), bits=[2, 3], group_sizes=[-1, 32],
                         ratios=[0.01, 0.05])
        points = sweep(model, CALIB, _loss, grid, progress=False)
    finally:
        mp.undo()
    return model, points, calls


def test_gradient_statistics_are_computed_once_per_sweep(swept):
    _, points, calls = swept
    assert sorted(calls["gradient"]) == [False, True]  # |G| for tacq, G^2 for squeezellm_like, once each
    assert calls["reference"] == 4  # one per (bits, group size), shared by tacq and spqr_like and all ratios
    # fp + per (bits, group): rtn, gptq, and 3 keeping methods x 2 ratios
    assert len(points) == 1 + 4 * (2 + 3 * 2)


def test_sweep_points_match_a_direct_quantization(swept):
    """The sweep's tacq point is quantize_model with compute_saliency's scores."""
    model, points, _ = swept
    point = next(p for p in points if (p.method, p.bits, p.group_size, p.ratio) == ("tacq", 2, 32, 0.05))
    cfg = TACQConfig(bits=2, group_size=32, ratio=0.05, method="tacq")
    direct = copy_model(model)
    report = tacq_ext.quantize_model(direct, CALIB, cfg, progress=False)
    assert report.kept == point.kept
    assert _loss(direct)["loss"] == pytest.approx(point.metrics["loss"], rel=1e-5)


def test_average_bits_count_every_stored_tensor(swept):
    model, points, _ = swept
    fp = points[0]
    assert (fp.method, fp.avg_bits) == ("fp", 32.0)
    for p in points[1:]:
        assert p.avg_bits == pytest.approx(_formula_bits(model, p.kept, p.bits, p.group_size), rel=1e-12)
        assert (p.kept > 0) == (p.method in ("tacq", "spqr_like", "squeezellm_like"))


def _safetensors_bytes(path) -> dict:
    """{tensor name: bytes} from the file's header alone."""
    with open(path, "rb") as f:
        header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
    return {k: v["data_offsets"][1] - v["data_offsets"][0] for k, v in header.items() if k != "__metadata__"}


def test_stored_bits_equal_a_saved_checkpoints_tensor_sizes(tmp_path):
    model = tiny_llama()
    cfg = TACQConfig(bits=3, group_size=32, ratio=0.03, method="tacq", reference="rtn")
    report = tacq_ext.quantize_model(model, CALIB, cfg, progress=False)
    tacq_ext.save_quantized(model, tmp_path, cfg=cfg, report=report)
    sizes = _safetensors_bytes(tmp_path / "model.safetensors")
    layers = {n: m for n, m in model.named_modules() if isinstance(m, QuantizedLinear)}
    stored = sum(sizes[f"{n}.{t}"] for n in layers for t in ("packed", "scale", "zero", "row_ptr", "col_idx", "values"))
    weights = sum(m.out_features * m.in_features for m in layers.values())
    assert report.kept > 0
    assert stored_bits_per_weight(model) == pytest.approx(8 * stored / weights, rel=1e-12)
    assert report.avg_bits == pytest.approx(8 * stored / weights, rel=1e-12)
    assert (tmp_path / "model.safetensors").stat().st_size > stored


def test_stored_bits_without_quantized_layers_need_targets():
    with pytest.raises(ValueError, match="targets="):
        stored_bits_per_weight(tiny_llama())


def _point(method, avg_bits, loss):
    return SweepPoint(method, "paper", 2, -1, 0.0, avg_bits, 0, {"loss": loss}, 0.0)


def test_pareto_front_keeps_points_no_cheaper_point_beats():
    points = [SweepPoint("fp", "-", 0, -1, 0.0, 32.0, 0, {"loss": 0.1}, 0.0),
              _point("a", 2.2, 3.0), _point("b", 2.4, 3.5), _point("c", 2.5, 2.0), _point("d", 2.5, 2.5),
              _point("e", 3.0, 2.0)]
    front = mark_pareto(points, "loss", higher_is_better=False)
    assert [p.method for p in front] == ["a", "c"]
    assert [p.pareto for p in points] == [False, True, False, True, False, False]
    assert [p.method for p in mark_pareto(points, "loss", higher_is_better=True)] == ["a", "b"]


def test_outputs_with_and_without_matplotlib(tmp_path, monkeypatch, capsys):
    points = [SweepPoint("fp", "-", 0, -1, 0.0, 32.0, 0, {"loss": 0.1}, 0.0), _point("rtn", 2.3, 3.0),
              _point("tacq", 2.5, 2.0)]
    mark_pareto(points, "loss", higher_is_better=False)
    written = write_sweep(points, tmp_path / "a", "loss", False, {"model": "m"})
    assert [p.name for p in written] == ["sweep.md", "sweep.json", "pareto.png"]
    assert written[2].read_bytes()[:4] == b"\x89PNG"
    table = written[0].read_text().splitlines()
    assert table[0].startswith("| method | recipe | bits | group | ratio | wide rows | avg bits")
    assert [row.split("|")[1].strip() for row in table[2:]] == ["rtn", "tacq", "fp"]
    data = json.loads(written[1].read_text())
    assert data["metric"] == "loss" and [p["pareto"] for p in data["points"]] == [False, True, True]
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    written = write_sweep(points, tmp_path / "b", "loss", False, {})
    assert [p.name for p in written] == ["sweep.md", "sweep.json"]
    assert "no Pareto plot: matplotlib is not installed" in capsys.readouterr().out


def test_grid_runs_each_distinct_quantization_once():
    grid = SweepGrid(methods=["gptq", "tacq"], bits=[2], group_sizes=[-1], ratios=[0.01, 0.02],
                     recipes={"paper": {}, "layer_budget": {"budget": "layer"}, "act_order": {"act_order": True}})
    points = [(recipe, cfg.method, cfg.ratio) for recipe, cfg in grid.configs()]
    assert points == [("paper", "gptq", 0.0), ("paper", "tacq", 0.01), ("paper", "tacq", 0.02),
                      ("layer_budget", "tacq", 0.01), ("layer_budget", "tacq", 0.02),
                      ("act_order", "gptq", 0.0), ("act_order", "tacq", 0.01), ("act_order", "tacq", 0.02)]


def test_grid_rejects_bad_options_naming_them():
    with pytest.raises(ValueError, match="group_size"):
        SweepGrid(methods=["rtn"], bits=[2], group_sizes=[48], ratios=[0.01]).configs()
    with pytest.raises(TypeError, match="act_ordr"):
        SweepGrid(methods=["rtn"], bits=[2], group_sizes=[-1], ratios=[0.01], recipes={"x": {"act_ordr": True}}).configs()


@pytest.mark.parametrize("argv, message", [
    ([], "exactly one of --demo and --model"),
    (["--demo", "--bits", "2,5"], "--bits"),
    (["--demo", "--recipes", "nope"], "--recipes"),
    (["--model", "somewhere"], "--calib"),
])
def test_cli_errors_name_the_argument(argv, message, capsys):
    assert cli.main(["sweep", *argv]) == 2
    assert message in capsys.readouterr().err


@pytest.fixture
def hf_dir(tmp_path):
    """A tiny Llama saved with the demo's character tokenizer."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    LlamaForCausalLM(config).save_pretrained(tmp_path / "model")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(ASSET_DIR / name, tmp_path / "model" / name)
    text = "".join(f"line {i}: the quick brown fox jumps over the lazy dog\n" for i in range(40))
    (tmp_path / "text.txt").write_text(text)
    return tmp_path


def test_cli_sweeps_a_hugging_face_directory_on_a_text_file(hf_dir, capsys):
    out = hf_dir / "out"
    rc = cli.main(["sweep", "--model", str(hf_dir / "model"), "--calib", str(hf_dir / "text.txt"),
                   "--eval", str(hf_dir / "text.txt"), "--max-length", "64", "--methods", "rtn,tacq",
                   "--bits", "2", "--group-sizes", "32", "--ratios", "0.01", "--reference", "rtn", "--quiet",
                   "--out", str(out)])
    assert rc == 0
    data = json.loads((out / "sweep.json").read_text())
    assert [(p["method"], p["bits"]) for p in data["points"]] == [("fp", 0), ("rtn", 2), ("tacq", 2)]
    assert all(p["metrics"]["perplexity"] > 1 for p in data["points"])
    assert data["metric"] == "loss" and not data["higher_is_better"] and data["commit"]
    assert "| tacq |" in capsys.readouterr().out


@pytest.mark.skipif(not (ASSET_DIR / "config.json").is_file(), reason="demo checkpoint not shipped")
def test_cli_sweeps_the_demo(tmp_path):
    out = tmp_path / "out"
    assert cli.main(["sweep", "--demo", "--calib-task", "arith", "--tasks", "arith,facts", "--limit", "3",
                     "--calib-size", "4", "--methods", "rtn", "--bits", "2", "--group-sizes", "64", "--quiet",
                     "--out", str(out)]) == 0
    data = json.loads((out / "sweep.json").read_text())
    assert data["metric"] == "mean" and data["higher_is_better"]
    assert set(data["points"][1]["metrics"]) == {"arith", "facts", "mean"}
