"""Data-parallel calibration (docs/distributed.md): two gloo ranks on the CPU
give the model one process gives on the same batches, with the batches split
unevenly; a rank that fails or dies ends the run on every rank, quickly."""

import json
import multiprocessing
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

import tacq_ext
from tacq_ext import cli
from tacq_ext.pipeline import _saliency
from tacq_ext.sequential import collect_hessians
from tacq_ext.targets import find_targets, targets_by_block

import distributed_worker as worker
from method_fixtures import save_tiny_hf_model, tiny_llama

WORLD = 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(scenario: str, out_dir: Path, deadline_s: float, timeout_s: float = 60.0) -> list:
    """Starts WORLD rank processes and returns each one's outcome; a rank still
    running after deadline_s is a hang: it is killed and the test fails."""
    ctx = multiprocessing.get_context("forkserver")  # one server imports torch once; ranks fork from it
    ctx.set_forkserver_preload(["distributed_worker", "method_fixtures", "tacq_ext"])
    port = free_port()
    procs = [ctx.Process(target=worker.run, args=(r, WORLD, port, scenario, str(out_dir), timeout_s))
             for r in range(WORLD)]
    start = time.monotonic()
    for p in procs:
        p.start()
    hung = []
    for r, p in enumerate(procs):
        p.join(max(0.0, deadline_s - (time.monotonic() - start)))
        if p.is_alive():
            hung.append(r)
            p.kill()
            p.join()
    assert not hung, f"ranks {hung} still running after {deadline_s} s"
    return [torch.load(out_dir / f"rank{r}.pt") if (out_dir / f"rank{r}.pt").exists() else None
            for r in range(WORLD)]


@pytest.fixture(scope="module")
def distributed(tmp_path_factory):
    outcomes = run_ranks("equality", tmp_path_factory.mktemp("distributed"), deadline_s=240)
    for r, o in enumerate(outcomes):
        assert o is not None and o["ok"], f"rank {r}: {o}"
    return outcomes


@pytest.fixture(scope="module")
def single():
    """The same batches, all in one process."""
    out = {}
    for recipe in worker.RECIPES:
        model = tiny_llama()
        report = tacq_ext.quantize_model(model, worker.calib(), worker.config(recipe), progress=False)
        out[recipe] = {"state": worker._quantized(model), "kept": report.kept}
    model = tiny_llama()
    targets = find_targets(model)
    one = tacq_ext.distributed.Ranks.single()
    out["abs_grad"] = _saliency(model, worker.calib(), targets, None, False, False, one)
    out["fisher"] = _saliency(model, worker.calib(), targets, None, False, False, one, squared=True)
    block0 = targets_by_block(model, targets)[0][0]
    out["hessians"] = collect_hessians(model, worker.calib(), {n: targets[n] for n in block0}, progress=False)
    return out


@pytest.mark.parametrize("recipe", [*worker.RECIPES, "tacq_offloaded"])
def test_distributed_uneven_batches_same_kept_positions_and_codes(distributed, single, recipe):
    """tacq_offloaded: each rank's model has its blocks offloaded (tacq_ext.offload)."""
    assert [o["batches"] for o in distributed] == [2, 1]
    one = "tacq" if recipe == "tacq_offloaded" else recipe
    expected = single[one]["state"]
    for rank, outcome in enumerate(distributed):
        state = outcome[recipe]["state"]
        assert outcome[recipe]["kept"] == single[one]["kept"]
        assert state.keys() == expected.keys()
        for key, value in expected.items():
            if key.endswith(("codes", "scale", "zero", "row_ptr", "col_idx")) or value.dtype in (torch.int32,
                                                                                                  torch.uint8):
                assert torch.equal(state[key], value), f"rank {rank}: {key}"
            else:  # residuals and unquantized tensors: fp32 sums in another order
                torch.testing.assert_close(state[key], value, rtol=1e-5, atol=1e-6, msg=f"rank {rank}: {key}")


@pytest.mark.parametrize("stat", ["abs_grad", "fisher", "hessians"])
def test_distributed_reduced_statistics_match_one_process(distributed, single, stat, record_property):
    """Max relative difference (to the largest entry of each layer) of the
    statistics summed over ranks vs one process; recorded in the report."""
    worst = 0.0
    for outcome in distributed:
        for name, expected in single[stat].items():
            got = outcome[stat][name]
            worst = max(worst, float((got - expected).abs().max() / expected.abs().max()))
    record_property(f"max_rel_diff_{stat}", worst)
    assert worst < 1e-5
    print(f"{stat}: max relative difference {worst:.2e}")


def test_distributed_layers_are_spread_over_the_ranks(distributed):
    owners = distributed[0]["owners"]
    assert owners == distributed[1]["owners"] and set(owners.values()) == {0, 1}
    for block in ("model.layers.0.", "model.layers.1."):
        assert {r for n, r in owners.items() if n.startswith(block)} == {0, 1}


def test_distributed_failing_rank_stops_every_rank(tmp_path):
    start = time.monotonic()
    outcomes = run_ranks("bad_data", tmp_path, deadline_s=60)
    assert time.monotonic() - start < 60
    assert outcomes[1]["type"] == "ValueError" and "at least one label != -100" in outcomes[1]["error"]
    assert outcomes[0]["type"] == "RankFailed"
    assert outcomes[0]["error"].startswith("rank 1 failed during saliency: ValueError: every calibration sample")


def test_distributed_killed_rank_stops_the_others(tmp_path):
    """No supervisor here: rank 0 must notice by itself that rank 1 is gone
    (gloo sees the closed connection), well before the 60 s group timeout."""
    outcomes = run_ranks("killed", tmp_path, deadline_s=50, timeout_s=60)
    assert outcomes[1] is None  # SIGKILL: it wrote nothing
    assert not outcomes[0]["ok"] and outcomes[0]["seconds"] < 30, outcomes[0]


def _torchrun_quantize(args: list, timeout: float = 120) -> subprocess.CompletedProcess:
    # the tacq_ext this test imported (the installed package, or python/ in a dev build)
    package_root = str(Path(tacq_ext.__file__).resolve().parent.parent)
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p))
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORLD}",
                           "-m", "tacq_ext", "quantize", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def _calib_file(path: Path, empty_answer_at=None) -> Path:
    rows = [{"prompt": f"{a}+{a}=", "answer": "" if a == empty_answer_at else str(2 * a)} for a in range(12)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_distributed_torchrun_cli_writes_the_one_process_checkpoint(tmp_path):
    model_dir = save_tiny_hf_model(tmp_path / "tiny")
    args = ["--model", str(model_dir), "--calib", str(_calib_file(tmp_path / "calib.jsonl")), "--bits", "2",
            "--ratio", "0.01", "--method", "tacq", "--batch-size", "4", "--quiet"]  # 3 batches: 2 + 1
    assert cli.main(["quantize", *args, "--out", str(tmp_path / "one")]) == 0
    run = _torchrun_quantize([*args, "--out", str(tmp_path / "two")])
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("on 2 rank(s)") == 1  # rank 0 alone reports and writes
    one, two = load_file(tmp_path / "one" / "model.safetensors"), load_file(tmp_path / "two" / "model.safetensors")
    assert one.keys() == two.keys()
    for key, value in one.items():
        if value.dtype == torch.int32:
            assert torch.equal(two[key], value), key
        else:
            torch.testing.assert_close(two[key], value, rtol=1e-3, atol=1e-5, msg=key)
    tacq_ext.load_quantized(tmp_path / "two", AutoModelForCausalLM.from_pretrained(model_dir))
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


def test_distributed_torchrun_cli_failing_rank_exits_with_its_error(tmp_path):
    """Example 5 has no answer: the batch of examples 4-7 (rank 1's) has a
    sample without loss. Both ranks exit with that error; nothing is written."""
    model_dir = save_tiny_hf_model(tmp_path / "tiny")
    start = time.monotonic()
    run = _torchrun_quantize(["--model", str(model_dir), "--calib", str(_calib_file(tmp_path / "c.jsonl", 5)),
                              "--batch-size", "4", "--quiet", "--out", str(tmp_path / "q")], timeout=60)
    assert run.returncode != 0 and time.monotonic() - start < 60
    assert "rank 1 failed during saliency: ValueError: every calibration sample needs" in run.stderr
    assert not (tmp_path / "q").exists()


def test_distributed_owner_assignment_balances_each_block():
    shapes = {"q": (768, 768), "k": (256, 768), "v": (256, 768), "o": (768, 768), "gate": (2048, 768),
              "up": (2048, 768), "down": (768, 2048)}
    groups = [[(f"{b}.{n}", tacq_ext.distributed.gptq_cost(*s)) for n, s in shapes.items()] for b in range(3)]
    owners = tacq_ext.distributed.assign_owners(groups, 2)
    for group in groups:
        load = [sum(c for n, c in group if owners[n] == r) for r in range(2)]
        assert max(load) / min(load) < 1.1, load
    singles = tacq_ext.distributed.assign_owners([[("a", 1.0)], [("b", 1.0)], [("c", 1.0)]], 2)
    assert singles == {"a": 0, "b": 1, "c": 0}
