"""The demo Llama: its architecture, and loading the checkpoint shipped in
tacq_ext/assets/demo_llama (or any directory saved the same way)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Tuple

import torch

from .tokenizer import BOS, EOS, PAD, VOCAB_SIZE, CharTokenizer

ASSET_DIR = Path(__file__).resolve().parent.parent / "assets" / "demo_llama"
ACCURACY_FILE = "fp_accuracy.json"


def demo_config(hidden: int = 192, layers: int = 4, heads: int = 6, kv_heads: int = 2, intermediate: int = 512,
                max_positions: int = 256):
    """RMSNorm, SwiGLU, RoPE and grouped-query attention (kv_heads < heads);
    every hidden size a multiple of 32 for the packed kernels."""
    from transformers import LlamaConfig

    for name, value in (("hidden", hidden), ("intermediate", intermediate), ("hidden/heads*kv_heads", hidden // heads * kv_heads)):
        if value % 32:
            raise ValueError(f"{name} must be a multiple of 32, got {value}")
    return LlamaConfig(vocab_size=VOCAB_SIZE, hidden_size=hidden, intermediate_size=intermediate,
                       num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                       max_position_embeddings=max_positions, rms_norm_eps=1e-5, rope_theta=10000.0,
                       hidden_act="silu", tie_word_embeddings=False, pad_token_id=PAD, bos_token_id=BOS,
                       eos_token_id=EOS)


def load_demo_model(path: Optional[str] = None) -> Tuple[torch.nn.Module, CharTokenizer]:
    """(LlamaForCausalLM in fp32 eval mode, CharTokenizer) from `path`
    (default: the shipped checkpoint). Never touches the network."""
    from transformers import LlamaForCausalLM

    directory = Path(path) if path is not None else ASSET_DIR
    if not (directory / "config.json").is_file():
        raise FileNotFoundError(f"no demo model checkpoint at {directory} (config.json missing)")
    model = LlamaForCausalLM.from_pretrained(directory, local_files_only=True, dtype=torch.float32).eval()
    return model, CharTokenizer.load(directory)


def recorded_accuracy(path: Optional[str] = None) -> dict:
    """The full-precision accuracy written by the training script beside the model."""
    directory = Path(path) if path is not None else ASSET_DIR
    return json.loads((directory / ACCURACY_FILE).read_text())
