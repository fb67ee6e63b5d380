"""Rank processes for tests/test_distributed.py. Each rank joins a gloo group,
runs one scenario on its share of the calibration batches and saves what it
saw (or the error it got, and when) to out_dir/rank{r}.pt."""

import datetime
import os
import signal
import tempfile
import time

import torch
import torch.distributed as dist
from safetensors.torch import save_file

CALIB_SEEDS = (10, 11, 12)  # batch i goes to rank i % world: 2 batches on rank 0, 1 on rank 1
RECIPES = {  # name: TACQConfig arguments besides bits=2, ratio=0.01
    "tacq": {}, "gptq": {"method": "gptq"}, "squeezellm_like": {"method": "squeezellm_like"},
    "spqr_like": {"method": "spqr_like"}, "tacq_layer_budget": {"budget": "layer"},
    "tacq_row_budget": {"budget": "row"}, "tacq_rescore": {"rescore": True},
    "tacq_wide_rows": {"wide_rows": 0.1},
}


def calib():
    from method_fixtures import lm_batch
    return [lm_batch(s) for s in CALIB_SEEDS]


def config(recipe):
    from tacq_ext import TACQConfig
    return TACQConfig(bits=2, ratio=0.01, **RECIPES[recipe])


def _quantized(model) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _equality(rank, world):
    """quantize_model for each recipe, and the reduced statistics (gradient
    accumulators, Fisher sums, block 0 Hessians) gathered on every rank."""
    import tacq_ext
    from method_fixtures import tiny_llama
    from tacq_ext.pipeline import _ranks, _saliency
    from tacq_ext.sequential import collect_hessians
    from tacq_ext.targets import find_targets, targets_by_block

    mine = calib()[rank::world]
    out = {"batches": len(mine)}
    for recipe in RECIPES:
        model = tiny_llama()
        report = tacq_ext.quantize_model(model, mine, config(recipe), progress=False)
        out[recipe] = {"state": _quantized(model), "kept": report.kept}
    with tempfile.TemporaryDirectory() as saved:  # the blocks offloaded to safetensors files
        # (written directly: under torch.distributed, save_pretrained writes on rank 0 only)
        model = tiny_llama()
        model.config.save_pretrained(saved)
        save_file(model.state_dict(), os.path.join(saved, "model.safetensors"), metadata={"format": "pt"})
        model = tacq_ext.load_offloaded(saved)
        report = tacq_ext.quantize_model(model, mine, config("tacq"), progress=False)
        out["tacq_offloaded"] = {"state": _quantized(model), "kept": report.kept}
    model = tiny_llama()
    targets = find_targets(model)
    ranks = _ranks(model, targets)
    for key, squared in (("abs_grad", False), ("fisher", True)):
        owned = _saliency(model, mine, targets, None, False, False, ranks, squared=squared)
        out[key] = {n: t["a"] for n, t in ranks.share(list(targets), {n: {"a": a} for n, a in owned.items()}).items()}
    block0 = targets_by_block(model, targets)[0][0]
    hessians = collect_hessians(model, mine, {n: targets[n] for n in block0}, progress=False, ranks=ranks)
    local = {n: {"h": h} for n, h in hessians.items() if h is not None}
    out["hessians"] = {n: t["h"] for n, t in ranks.share(block0, local).items()}
    out["owners"] = ranks.owners
    return out


def _bad_data(rank, world):
    """Rank 1's batch has no supervised token: the default loss raises there."""
    import tacq_ext
    from method_fixtures import tiny_llama

    mine = calib()[rank::world]
    if rank == 1:
        mine[0]["labels"][:] = -100
    tacq_ext.quantize_model(tiny_llama(), mine, config("tacq"), progress=False)
    return {}


def _killed(rank, world):
    """Rank 1 is killed (SIGKILL) in the middle of its gradient pass."""
    import tacq_ext
    from method_fixtures import tiny_llama
    from tacq_ext.saliency import default_loss

    def loss_fn(model, batch):
        if rank == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        return default_loss(model, batch)

    tacq_ext.quantize_model(tiny_llama(), calib()[rank::world], config("tacq"), loss_fn=loss_fn, progress=False)
    return {}


SCENARIOS = {"equality": _equality, "bad_data": _bad_data, "killed": _killed}


def run(rank: int, world: int, port: int, scenario: str, out_dir: str, timeout_s: float) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=timeout_s))
    start = time.monotonic()
    try:
        outcome = {"ok": True, **SCENARIOS[scenario](rank, world)}
    except Exception as e:  # noqa: BLE001  (the test checks which error each rank got)
        outcome = {"ok": False, "type": type(e).__name__, "error": str(e)}
    outcome["seconds"] = time.monotonic() - start
    torch.save(outcome, os.path.join(out_dir, f"rank{rank}.pt"))
    if outcome["ok"]:  # after a failure the group is left to the process exit: a dead peer cannot shut down
        dist.destroy_process_group()
