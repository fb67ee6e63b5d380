"""Qwen checkpoints, not only Llama ones: Qwen2 (biases on q/k/v) and Qwen3
(RMSNorm on queries and keys), each with tied and untied embeddings, go
through quantize_model, save_quantized, from_pretrained, generate,
save_pretrained and the block-by-block offloaded path like a Llama."""

import copy

import pytest
import torch
from transformers import AutoModelForCausalLM, Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM

import tacq_ext
from tacq_ext import TACQConfig

from method_fixtures import (VOCAB, assert_offloaded_quantization_is_the_whole_models, greedy_ids, lm_batch,
                             seeded_logits)

CFG = TACQConfig(bits=3, ratio=0.05)
CALIB = [lm_batch(40), lm_batch(41, B=2, T=12, pad=0)]
ARCHITECTURES = ["qwen2", "qwen3"]


def tiny_qwen(arch: str, tied: bool, layers: int = 2):
    torch.manual_seed(3)
    shape = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=layers,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=tied)
    if arch == "qwen3":
        return Qwen3ForCausalLM(Qwen3Config(head_dim=16, **shape)).eval()
    model = Qwen2ForCausalLM(Qwen2Config(**shape)).eval()
    with torch.no_grad():  # initialized to zero: give them something to lose
        for name, bias in model.named_parameters():
            if name.endswith("bias"):
                bias.normal_(0, 0.5)
    return model


@pytest.fixture(scope="module", params=[(arch, tied) for arch in ARCHITECTURES for tied in (False, True)],
                ids=lambda p: f"{p[0]}-{'tied' if p[1] else 'untied'}")
def saved(request, tmp_path_factory):
    """(architecture, tied, checkpoint directory, the in-memory quantized model, the original)."""
    arch, tied = request.param
    original = tiny_qwen(arch, tied)
    model = copy.deepcopy(original)
    report = tacq_ext.quantize_model(model, CALIB, CFG, progress=False)
    assert report.kept > 0
    out = tmp_path_factory.mktemp(arch) / "q"
    tacq_ext.save_quantized(model, out, cfg=CFG, report=report)
    return arch, tied, out, model, original


def test_every_projection_is_quantized_and_qwen2_keeps_its_biases(saved):
    arch, _, _, model, original = saved
    names = [f"model.layers.{i}.{part}" for i in range(len(model.model.layers))
             for part in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                          "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")]
    for name in names:
        layer, before = model.get_submodule(name), original.get_submodule(name)
        assert isinstance(layer, tacq_ext.QuantizedLinear), name
        assert (layer.bias is not None) == (arch == "qwen2" and name.split(".")[-1] in ("q_proj", "k_proj", "v_proj"))
        if layer.bias is not None:
            assert torch.equal(layer.bias, before.bias), name
        error = (layer.dense_weight() - before.weight).norm() / before.weight.norm()
        assert error < 0.5, (name, error)  # 3 bits per row after GPTQ: 0.17-0.32 on these random weights


def test_from_pretrained_decodes_as_the_quantized_model(saved):
    arch, tied, path, model, _ = saved
    loaded = AutoModelForCausalLM.from_pretrained(path)
    assert type(loaded).__name__ == type(model).__name__
    if arch == "qwen2":
        q = loaded.get_submodule("model.layers.1.self_attn.q_proj")
        assert torch.equal(q.bias, model.get_submodule("model.layers.1.self_attn.q_proj").bias)
    if tied:  # one tensor for the embeddings and the head, as in the original model
        assert loaded.lm_head.weight.data_ptr() == loaded.model.embed_tokens.weight.data_ptr()
    assert torch.equal(seeded_logits(loaded), seeded_logits(model))
    assert torch.equal(greedy_ids(loaded), greedy_ids(model))


def test_save_pretrained_round_trips(saved, tmp_path):
    path = saved[2]
    loaded = AutoModelForCausalLM.from_pretrained(path)
    loaded.save_pretrained(tmp_path / "again")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "again")
    assert torch.equal(seeded_logits(again), seeded_logits(loaded))


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_offloaded_quantize_model_matches_the_whole_model(tmp_path, arch):
    tiny_qwen(arch, tied=True, layers=3).save_pretrained(tmp_path, max_shard_size="40KB")
    expected_model = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert_offloaded_quantization_is_the_whole_models(expected_model, tmp_path, CALIB, CFG)
