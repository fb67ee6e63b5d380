"""Offloaded decoder blocks (tacq_ext.offload, docs/distributed.md): a model
whose blocks stay in its safetensors files until used gives the logits, the
scores and the quantized model of the same model loaded whole, with never
more than one block's weights resident."""

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from safetensors.torch import load_file, save_file
from transformers import (AutoModelForCausalLM, Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig,
                          LlamaForCausalLM)

import tacq_ext
from tacq_ext import TACQConfig, cli
from tacq_ext.offload import load_offloaded, offload_of
from tacq_ext.pipeline import _saliency
from tacq_ext.distributed import Ranks
from tacq_ext.targets import find_targets

from method_fixtures import VOCAB, assert_offloaded_quantization_is_the_whole_models, lm_batch, save_tiny_hf_model

CALIB = [lm_batch(20), lm_batch(21, B=2, T=12, pad=0)]


def tiny_dir(path: Path, tied: bool = False, layers: int = 3, shard: str = "40KB") -> Path:
    """A 3-block Llama saved in several safetensors shards (with an index)."""
    torch.manual_seed(1)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      tie_word_embeddings=tied)
    LlamaForCausalLM(cfg).save_pretrained(path, max_shard_size=shard)
    return path


def whole(path: Path):
    return AutoModelForCausalLM.from_pretrained(path, local_files_only=True).eval()


def logits(model, batch):
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


@pytest.mark.parametrize("tied", [False, True])
def test_offloaded_logits_equal_the_whole_model_one_block_at_a_time(tmp_path, tied):
    path = tiny_dir(tmp_path, tied=tied)
    assert (path / "model.safetensors.index.json").is_file()
    model = load_offloaded(path)
    offload = offload_of(model)
    assert all(p.is_meta for block in offload.blocks for p in block.parameters())
    assert torch.equal(logits(model, CALIB[0]), logits(whole(path), CALIB[0]))
    assert offload.peak_resident == 1 and offload.resident == 0
    assert all(p.is_meta for block in offload.blocks for p in block.parameters())


def test_offloaded_gemma3_builds_its_derived_tables_as_from_pretrained(tmp_path):
    """Gemma 3's scaled embedding and its local and global rotary tables are
    buffers its constructors derive (the local one from a modified config):
    built by those constructors, not guessed, the logits are the same."""
    torch.manual_seed(2)
    cfg = Gemma3TextConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                           num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=64,
                           sliding_window=4)
    Gemma3ForCausalLM(cfg).save_pretrained(tmp_path, max_shard_size="40KB")
    model = load_offloaded(tmp_path)
    reference = whole(tmp_path)
    assert {n for n, _ in model.named_buffers()} == {n for n, _ in reference.named_buffers()}
    for (name, buffer), (_, expected) in zip(model.named_buffers(), reference.named_buffers()):
        assert torch.equal(buffer, expected), name
    assert torch.equal(logits(model, CALIB[1]), logits(reference, CALIB[1]))
    assert offload_of(model).peak_resident == 1


@pytest.mark.parametrize("squared", [False, True], ids=["abs_grad", "fisher"])
def test_offloaded_gradient_pass_matches_the_whole_model(tmp_path, squared):
    """Block by block, the statistics are the same products added in the same
    order: equal to the last bit on this model."""
    path = tiny_dir(tmp_path)
    expected_model, model = whole(path), load_offloaded(path)
    one = Ranks.single()
    expected = _saliency(expected_model, CALIB, find_targets(expected_model), None, False, False, one, squared)
    got = _saliency(model, CALIB, find_targets(model), None, False, False, one, squared)
    assert got.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-6, atol=0, msg=name)
    assert offload_of(model).peak_resident == 1


RECIPES = {
    "tacq": {}, "tacq_rtn_reference": {"reference": "rtn"}, "tacq_groups_row_budget": {"group_size": 32,
                                                                                        "budget": "row"},
    "gptq": {"method": "gptq"}, "rtn": {"method": "rtn"}, "spqr_like": {"method": "spqr_like"},
    "squeezellm_like": {"method": "squeezellm_like"}, "tacq_wide_rows": {"wide_rows": 0.1},
}


@pytest.mark.parametrize("recipe", RECIPES)
def test_offloaded_quantize_model_matches_the_whole_model(tmp_path, recipe):
    path = tiny_dir(tmp_path)
    cfg = TACQConfig(bits=2, ratio=0.02, **RECIPES[recipe])
    expected_model = whole(path)
    model = assert_offloaded_quantization_is_the_whole_models(expected_model, path, CALIB, cfg)
    assert offload_of(model) is None and not any(t.is_meta for t in model.state_dict().values())
    assert torch.equal(logits(model, CALIB[1]), logits(expected_model, CALIB[1]))


def test_offloaded_rescore_is_refused(tmp_path):
    model = load_offloaded(tiny_dir(tmp_path))
    with pytest.raises(ValueError, match="rescore=True is not supported on a model with offloaded blocks"):
        tacq_ext.quantize_model(model, CALIB, TACQConfig(bits=2, rescore=True), progress=False)


def test_offloaded_targets_outside_the_blocks_are_refused(tmp_path):
    model = load_offloaded(tiny_dir(tmp_path))
    with pytest.raises(ValueError, match="every target layer must be inside a decoder block"):
        tacq_ext.compute_saliency(model, CALIB, TACQConfig(bits=2), progress=False,
                                  target_filter=lambda name, m: name == "lm_head" or name.endswith("up_proj"))


def test_offloaded_bad_files_name_the_problem(tmp_path):
    path = tiny_dir(tmp_path / "model", shard="10GB")  # one model.safetensors
    (path / "model.safetensors").rename(path / "elsewhere.safetensors")
    with pytest.raises(FileNotFoundError, match="neither model.safetensors.index.json nor model.safetensors"):
        load_offloaded(path)

    (path / "elsewhere.safetensors").rename(path / "model.safetensors")
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="could not be opened as a safetensors file"):
        load_offloaded(path)

    path = tiny_dir(tmp_path / "shapes", shard="10GB")
    tensors = load_file(path / "model.safetensors")
    tensors["model.layers.1.mlp.up_proj.weight"] = tensors["model.layers.1.mlp.up_proj.weight"][:, :32].clone()
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})
    model = load_offloaded(path)  # blocks are read when used
    with pytest.raises(ValueError, match=r"model.layers.1.mlp.up_proj.weight.*has shape \(96, 32\), the model "
                                         r"expects \(96, 64\)"):
        logits(model, CALIB[0])
    assert offload_of(model).resident == 0
    del tensors["model.layers.2.mlp.down_proj.weight"]
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"\['model.layers.2.mlp.down_proj.weight'\] are in none of its safetensors"):
        load_offloaded(path)  # names are checked before any block is read


def test_offloaded_cli_writes_the_checkpoint_of_the_whole_model(tmp_path):
    model_dir = save_tiny_hf_model(tmp_path / "model")
    calib = tmp_path / "calib.jsonl"
    calib.write_text("".join(json.dumps({"prompt": f"{a}+{a}=", "answer": str(2 * a)}) + "\n" for a in range(6)))
    outs = {}
    for flag in ([], ["--offload-blocks"]):
        out = tmp_path / ("offloaded" if flag else "whole")
        assert cli.main(["quantize", "--model", str(model_dir), "--calib", str(calib), "--batch-size", "3",
                         "--ratio", "0.02", "--out", str(out), "--quiet", *flag]) == 0
        outs[bool(flag)] = load_file(out / "model.safetensors")
    assert outs[True].keys() == outs[False].keys()
    for key in outs[False]:
        assert torch.equal(outs[True][key], outs[False][key]), key


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_offloaded_quantize_model_on_cuda_keeps_one_block_on_the_gpu(tmp_path):
    path = tiny_dir(tmp_path)
    cfg = TACQConfig(bits=2, ratio=0.02)
    model = load_offloaded(path, device="cuda")
    offload = offload_of(model)
    baseline = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    report = tacq_ext.quantize_model(model, [{k: v.cuda() for k, v in b.items()} for b in CALIB], cfg,
                                     progress=False)
    assert offload.peak_resident == 1 and report.kept > 0
    assert all(t.device.type == "cuda" for t in model.state_dict().values())
    assert torch.cuda.max_memory_allocated() > baseline


def test_offloaded_blocks_with_buffers_are_refused(tmp_path, monkeypatch):
    """A buffer inside a block (a table built at construction) is in no file: refused at load."""
    from transformers.models.llama import modeling_llama

    path = tiny_dir(tmp_path)
    original = modeling_llama.LlamaDecoderLayer.__init__

    def with_table(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.register_buffer("table", torch.zeros(2), persistent=False)

    monkeypatch.setattr(modeling_llama.LlamaDecoderLayer, "__init__", with_table)
    with pytest.raises(ValueError, match="its decoder blocks hold buffers"):
        load_offloaded(path)


def test_a_parameter_set_past_register_parameter_is_still_read_from_the_files(tmp_path, monkeypatch):
    """Built outside the meta swap, it would keep its random values; it is
    moved to meta like the rest, so a name the files lack is an error."""
    from transformers.models.llama import modeling_llama

    path = tiny_dir(tmp_path)
    original = modeling_llama.LlamaModel.__init__

    def with_direct_parameter(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self._parameters["scale"] = nn.Parameter(torch.ones(3))

    monkeypatch.setattr(modeling_llama.LlamaModel, "__init__", with_direct_parameter)
    with pytest.raises(ValueError, match=r"\['model.scale'\] are in none of its safetensors files"):
        load_offloaded(path)
