"""A vision-language model quantized through its text decoder: for Gemma 3
(AutoModelForCausalLM gives Gemma3ForConditionalGeneration, whose decoder
blocks are model.model.language_model.layers) the default targets are the
text decoder's projections, in quantize_model and in `tacq quantize`; the
vision tower stays as it was, and the checkpoint loads with from_pretrained.
Offloading reads tensors by the model's own names, so Gemma 3's saved
layout is refused by name."""

import copy
import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from transformers import AutoModelForCausalLM, Gemma3Config

import tacq_ext
from tacq_ext import QuantizedLinear, TACQConfig, cli
from tacq_ext.offload import load_offloaded
from tacq_ext.targets import decoder_blocks, find_targets

from method_fixtures import (VOCAB, assert_offloaded_quantization_is_the_whole_models, char_tokenizer, greedy_ids,
                             lm_batch, seeded_logits)

CFG = TACQConfig(bits=3, ratio=0.05)
CALIB = [lm_batch(40), lm_batch(41, B=2, T=12, pad=0)]
BLOCKS = "model.language_model.layers"
PROJECTIONS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
               "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


def tiny_gemma3(layers: int = 2, vocab: int = VOCAB) -> nn.Module:
    """Text ids 0..vocab-1; the three image tokens sit above them and never occur in the text."""
    torch.manual_seed(7)
    text = dict(vocab_size=vocab + 3, hidden_size=64, intermediate_size=96, num_hidden_layers=layers,
                num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=64,
                sliding_window=8)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                  image_size=32, patch_size=8)
    cfg = Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4, boi_token_index=vocab,
                       eoi_token_index=vocab + 1, image_token_index=vocab + 2)
    return AutoModelForCausalLM.from_config(cfg).eval()


def text_projections(layers: int):
    return [f"{BLOCKS}.{i}.{p}" for i in range(layers) for p in PROJECTIONS]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """(checkpoint directory, the in-memory quantized model, the original)."""
    original = tiny_gemma3()
    model = copy.deepcopy(original)
    report = tacq_ext.quantize_model(model, CALIB, CFG, progress=False)
    assert report.kept > 0
    out = tmp_path_factory.mktemp("gemma3") / "q"
    tacq_ext.save_quantized(model, out, cfg=CFG, report=report)
    return out, model, original


def test_the_text_decoder_blocks_are_found_and_the_vision_tower_is_not_a_target():
    model = tiny_gemma3()
    assert decoder_blocks(model) is model.get_submodule(BLOCKS)
    assert any(isinstance(m, nn.Linear) for m in model.model.vision_tower.modules())
    assert list(find_targets(model)) == text_projections(2)


def test_only_the_text_projections_are_quantized_and_the_rest_is_untouched(saved):
    _, model, original = saved
    quantized = [n for n, m in model.named_modules() if isinstance(m, QuantizedLinear)]
    assert quantized == text_projections(2)
    before = original.state_dict()
    for name, tensor in model.state_dict().items():
        if not name.startswith(BLOCKS + ".") or ".self_attn." not in name and ".mlp." not in name:
            assert torch.equal(tensor, before[name]), name
    assert not torch.equal(seeded_logits(model), seeded_logits(original))


def test_from_pretrained_decodes_as_the_quantized_model_and_round_trips(saved, tmp_path):
    path, model, _ = saved
    loaded = AutoModelForCausalLM.from_pretrained(path)
    assert type(loaded).__name__ == type(model).__name__
    assert isinstance(loaded.get_submodule(f"{BLOCKS}.1.mlp.down_proj"), QuantizedLinear)
    assert torch.equal(seeded_logits(loaded), seeded_logits(model))
    assert torch.equal(greedy_ids(loaded), greedy_ids(model))
    loaded.save_pretrained(tmp_path / "again")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "again")
    assert torch.equal(seeded_logits(again), seeded_logits(loaded))


def test_cli_quantizes_the_text_decoder_of_a_saved_vlm(tmp_path):
    tok = char_tokenizer()
    model = tiny_gemma3(vocab=len(tok))
    model.save_pretrained(tmp_path / "vlm")
    tok.save_pretrained(tmp_path / "vlm")
    data = tmp_path / "calib.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"{a}+{a}=", "answer": str(2 * a)}) + "\n" for a in range(8)))
    out = tmp_path / "q"
    assert cli.main(["quantize", "--model", str(tmp_path / "vlm"), "--calib", str(data), "--bits", "3",
                     "--out", str(out), "--quiet"]) == 0
    loaded = AutoModelForCausalLM.from_pretrained(out)
    assert [n for n, m in loaded.named_modules() if isinstance(m, QuantizedLinear)] == text_projections(2)


def test_offloading_a_checkpoint_in_the_layout_from_pretrained_renames_is_refused(tmp_path):
    model = tiny_gemma3()
    model.save_pretrained(tmp_path)  # transformers writes language_model.model.layers.*, and so on
    if all(name in safe_open(tmp_path / "model.safetensors", "pt").keys() for name, _ in model.named_parameters()):
        pytest.skip("this transformers saves the model's own parameter names")
    with pytest.raises(ValueError, match=r"\['model\..* are in none of its safetensors files.* must be loaded whole"):
        load_offloaded(tmp_path)


def test_offloaded_quantize_model_matches_the_whole_model(tmp_path):
    """A checkpoint named as the model names its parameters (state_dict())."""
    original = tiny_gemma3(layers=3)
    original.config.save_pretrained(tmp_path)
    tensors = {k: v for k, v in original.state_dict().items() if k != "lm_head.weight"}  # tied to the embeddings
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    assert_offloaded_quantization_is_the_whole_models(copy.deepcopy(original), tmp_path, CALIB, CFG)
