"""The C library (docs/c-api.md) on a checkpoint the Python API saved: the
example consumer examples/c (built by scripts/test.sh against the installed
package, its path in TACQ_C_EXAMPLE) loads a layer with the C checkpoint
reader and runs tacq_mixed_gemv_f32; y must match torch.ops.tacq.mixed_gemv
on the same layer and x."""

import json
import math
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import tacq_ext
from tacq_ext import TACQConfig

from method_fixtures import lm_batch, tiny_llama

EXAMPLE = os.environ.get("TACQ_C_EXAMPLE")

pytestmark = pytest.mark.skipif(
    not EXAMPLE,
    reason="set TACQ_C_EXAMPLE to the examples/c binary built against an installed libtacq "
           "(scripts/test.sh does: cmake -DTACQ_TORCH=OFF, install, then builds examples/c)")


@pytest.fixture(scope="module")
def example():
    path = Path(EXAMPLE)
    assert path.is_file() and os.access(path, os.X_OK), (
        f"TACQ_C_EXAMPLE={EXAMPLE} is set but is not an executable: build examples/c first")
    return path


@pytest.fixture(scope="module", params=[0.0, 0.2], ids=["one_width", "wide_rows"])
def checkpoint(tmp_path_factory, request):
    """wide_rows: layers split into 3- and 4-bit parts, each of which the C reader reads as a layer."""
    out = tmp_path_factory.mktemp("cckpt") / "q"
    cfg = TACQConfig(bits=3, ratio=0.05, method="tacq", reference="rtn", group_size=32, wide_rows=request.param)
    model = tiny_llama()
    report = tacq_ext.quantize_model(model, [lm_batch(40), lm_batch(41)], cfg, progress=False)
    tacq_ext.save_quantized(model, out, cfg=cfg, report=report)
    splits = json.loads((out / "tacq_config.json").read_text())["row_splits"]
    assert bool(splits) == bool(cfg.wide_rows), "wide_rows split no layer, or a one-width model has splits"
    return out


def run(example, *args):
    return subprocess.run([str(example), *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "2"})


def torch_y(ckpt: Path, layer: str, x: torch.Tensor) -> torch.Tensor:
    spec = json.loads((ckpt / "tacq_config.json").read_text())["layers"][layer]
    t = load_file(str(ckpt / "model.safetensors"))
    return torch.ops.tacq.mixed_gemv(x[None], t[f"{layer}.packed"], t[f"{layer}.scale"], t[f"{layer}.zero"],
                                     spec["bits"], spec["group_size"], t[f"{layer}.row_ptr"],
                                     t[f"{layer}.col_idx"], t[f"{layer}.values"])[0]


def layers(ckpt: Path) -> dict:
    return json.loads((ckpt / "tacq_config.json").read_text())["layers"]


def test_example_matches_torch_op(example, checkpoint, tmp_path):
    specs = layers(checkpoint)
    names = list(specs)
    assert len(names) >= 4
    parts = [n for n in names if ".parts." in n]
    for layer in [names[0], names[-1]] + (parts[:2] or ["model.layers.1.mlp.down_proj"]):
        x = torch.randn(specs[layer]["in_features"], generator=torch.Generator().manual_seed(7))
        x_file = tmp_path / f"{layer}.txt"
        x_file.write_text("\n".join(repr(float(v)) for v in x.tolist()))
        r = run(example, checkpoint, layer, x_file)
        assert r.returncode == 0, r.stderr
        y = torch.tensor([float(v) for v in r.stdout.split()])
        expected = torch_y(checkpoint, layer, x)
        assert y.shape == expected.shape
        torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)


def test_example_computes_a_row_split_from_its_parts(example, checkpoint, tmp_path):
    """A split layer: each part through the C library, rows put back in place
    by row_bits (tacq_checkpoint_row_split), against the torch op per part."""
    config = json.loads((checkpoint / "tacq_config.json").read_text())
    splits = config["row_splits"]
    if not splits:
        pytest.skip("this checkpoint has no row splits")
    row_bits_of = load_file(str(checkpoint / "model.safetensors"))
    for name, spec in list(splits.items())[:2]:
        x = torch.randn(spec["in_features"], generator=torch.Generator().manual_seed(8))
        x_file = tmp_path / f"{name}.txt"
        x_file.write_text("\n".join(repr(float(v)) for v in x.tolist()))
        r = run(example, checkpoint, name, x_file)
        assert r.returncode == 0, r.stderr
        y = torch.tensor([float(v) for v in r.stdout.split()])
        expected = torch.empty(spec["out_features"])
        row_bits = row_bits_of[f"{name}.row_bits"]
        for part in spec["parts"]:
            expected[row_bits == config["layers"][part]["bits"]] = torch_y(checkpoint, part, x)
        torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)


def test_example_default_layer_and_x(example, checkpoint):
    """No layer: the first one; no x file: x[k] = sin(k)."""
    r = run(example, checkpoint)
    assert r.returncode == 0, r.stderr
    layer, spec = next(iter(layers(checkpoint).items()))
    K = spec["in_features"]
    x = torch.tensor([math.sin(k) for k in range(K)], dtype=torch.float64).float()
    y = torch.tensor([float(v) for v in r.stdout.split()])
    torch.testing.assert_close(y, torch_y(checkpoint, layer, x), rtol=1e-5, atol=1e-5)


def test_example_reports_damaged_checkpoints(example, checkpoint, tmp_path):
    bad = shutil.copytree(checkpoint, tmp_path / "bad")
    weights = bad / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    r = run(example, bad)
    assert r.returncode != 0
    assert "malformed or corrupted checkpoint" in r.stderr and "truncated" in r.stderr
    r = run(example, checkpoint, "model.layers.9.nope")
    assert r.returncode != 0 and "no such quantized layer" in r.stderr
