"""Small models and calibration batches shared by the method tests."""

import torch
from transformers import LlamaConfig, LlamaForCausalLM

VOCAB = 48


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      tie_word_embeddings=False)
    return LlamaForCausalLM(cfg).eval()


def lm_batch(seed: int, B: int = 3, T: int = 10, pad: int = 3) -> dict:
    """Answer loss on the last half; sample 0 is right-padded by `pad` tokens."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (B, T), generator=g)
    labels = ids.clone()
    labels[:, : T // 2] = -100
    mask = torch.ones(B, T, dtype=torch.long)
    if pad:
        mask[0, -pad:] = 0
        labels[0, -pad:] = -100
        ids[0, -pad:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def copy_model(model):
    clone = type(model)(model.config).eval()
    clone.load_state_dict(model.state_dict())
    return clone
