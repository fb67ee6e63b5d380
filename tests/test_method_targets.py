"""Which layers the default targets take, and the models they refuse: decoder
blocks whose weights sit mostly outside nn.Linear layers (the fused experts
of transformers 5's MoE models) raise instead of leaving those weights in
full precision unnoticed."""

import json

import pytest
import torch
from torch import nn
from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

import tacq_ext
from tacq_ext import QuantizedLinear, TACQConfig, cli
from tacq_ext.targets import UNQUANTIZED_MATRIX_SHARE, find_targets

from method_fixtures import VOCAB, char_tokenizer, lm_batch


class Experts(nn.Module):
    def __init__(self, experts: int, width: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(experts, width, width))


class Block(nn.Module):
    def __init__(self, width: int, extra: nn.Module):
        super().__init__()
        self.proj = nn.Linear(width, width, bias=False)
        self.norm = nn.LayerNorm(width)
        self.extra = extra


def blocks_model(width: int, extra) -> nn.Module:
    """model.model.layers: two blocks, each an nn.Linear and `extra()`."""
    model = nn.Module()
    model.model = nn.Module()
    model.model.layers = nn.ModuleList([Block(width, extra()) for _ in range(2)])
    return model


def test_blocks_mostly_outside_linear_layers_are_refused_by_name_and_share():
    model = blocks_model(8, lambda: Experts(4, 8))  # per block: 64 linear, 16 norm, 256 experts
    with pytest.raises(ValueError, match=r"model\.layers\.0\.extra \(Experts\) and 1 more module\(s\) .*"
                                         r"not nn\.Linear layers: 76\.2 % of the decoder blocks' weights"):
        find_targets(model)
    chosen = find_targets(model, lambda name, layer: True)
    assert list(chosen) == ["model.layers.0.proj", "model.layers.1.proj"]


def test_small_matrices_outside_linear_layers_are_left_as_norms_are():
    model = blocks_model(64, lambda: nn.Conv1d(8, 8, 4, groups=8, bias=False))  # 32 of 4096 + 128 + 32
    share = 32 / (4096 + 128 + 32)
    assert share < UNQUANTIZED_MATRIX_SHARE
    assert list(find_targets(model)) == ["model.layers.0.proj", "model.layers.1.proj"]


def tiny_qwen3_moe(vocab: int = VOCAB) -> Qwen3MoeForCausalLM:
    torch.manual_seed(5)
    cfg = Qwen3MoeConfig(vocab_size=vocab, hidden_size=64, intermediate_size=96, moe_intermediate_size=32,
                         num_experts=4, num_experts_per_tok=2, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, head_dim=16, max_position_embeddings=64)
    return Qwen3MoeForCausalLM(cfg).eval()


def fused_experts(model) -> bool:
    """True where transformers holds each block's experts in fused tensors, not nn.Linear layers."""
    return not any(isinstance(m, nn.Linear) for m in model.model.layers[0].mlp.experts.modules())


def test_qwen3_moe_is_refused_where_its_experts_are_fused_and_quantized_where_they_are_linear():
    model = tiny_qwen3_moe()
    calib, cfg = [lm_batch(40)], TACQConfig(bits=3, ratio=0.05)
    expert_layers = [n for n, m in model.named_modules() if ".mlp.experts." in n and isinstance(m, nn.Linear)]
    if not fused_experts(model):  # transformers 4: one nn.Linear per expert and projection
        tacq_ext.quantize_model(model, calib, cfg, progress=False)
        assert all(isinstance(model.get_submodule(n), QuantizedLinear) for n in expert_layers)
        return
    with pytest.raises(ValueError, match=r"model\.layers\.0\.mlp\.experts \(\w+\) .* not nn\.Linear layers"):
        tacq_ext.quantize_model(model, calib, cfg, progress=False)
    with torch.no_grad():
        before = model(**{k: v for k, v in lm_batch(41).items() if k != "labels"}).logits
    tacq_ext.quantize_model(model, calib, cfg, progress=False,
                            target_filter=lambda name, layer: name.startswith("model.layers."))
    quantized = sorted(n for n, m in model.named_modules() if isinstance(m, QuantizedLinear))
    assert quantized == sorted(f"model.layers.{i}.self_attn.{p}_proj" for i in range(2) for p in "qkvo")
    with torch.no_grad():
        after = model(**{k: v for k, v in lm_batch(41).items() if k != "labels"}).logits
    assert after.shape == before.shape and torch.isfinite(after).all() and not torch.equal(after, before)


def test_cli_names_the_fused_experts_and_writes_nothing(tmp_path, capsys):
    tok = char_tokenizer()
    model = tiny_qwen3_moe(len(tok))
    model.save_pretrained(tmp_path / "moe")
    tok.save_pretrained(tmp_path / "moe")
    data = tmp_path / "calib.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"{a}+{a}=", "answer": str(2 * a)}) + "\n" for a in range(8)))
    out = tmp_path / "q"
    rc = cli.main(["quantize", "--model", str(tmp_path / "moe"), "--calib", str(data), "--bits", "3",
                   "--out", str(out), "--quiet"])
    if not fused_experts(model):  # transformers 4: the experts are quantized
        assert rc == 0 and (out / "model.safetensors").is_file()
        return
    assert rc == 2 and not out.exists()
    assert "model.layers.0.mlp.experts" in capsys.readouterr().err
