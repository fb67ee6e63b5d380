"""Small models and calibration batches shared by the method tests."""

import torch
from transformers import LlamaConfig, LlamaForCausalLM

VOCAB = 48


def tiny_llama(seed: int = 0, layers: int = 2) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=layers,
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


def seeded_logits(model, seed: int = 42) -> torch.Tensor:
    """The model's logits on lm_batch(seed)'s ids."""
    with torch.no_grad():
        return model(input_ids=lm_batch(seed)["input_ids"]).logits


def greedy_ids(model) -> torch.Tensor:
    """Six greedy tokens after a 5-token prompt."""
    prompt = lm_batch(43, B=1)["input_ids"][:, :5]
    return model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=6, do_sample=False)


def char_tokenizer():
    """A character-level fast tokenizer: <pad> 0, <s> 1, <unk> 2, then printable ASCII and newline."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = [chr(c) for c in range(32, 127)] + ["\n"]
    vocab = {"<pad>": 0, "<s>": 1, "<unk>": 2, **{c: i + 3 for i, c in enumerate(chars)}}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<s>", unk_token="<unk>")


def save_tiny_hf_model(path):
    """A tiny random Llama with char_tokenizer(), saved to `path`."""
    tok = char_tokenizer()
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=96,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                         max_position_embeddings=128, pad_token_id=0, bos_token_id=1))
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def copy_model(model):
    clone = type(model)(model.config).eval()
    clone.load_state_dict(model.state_dict())
    return clone


def assert_compiled_decoding_matches_eager(model):
    """Static-cache greedy decoding through torch.compile(fullgraph=True), which
    raises on any graph break, gives the tokens of eager decoding."""
    prompt = lm_batch(44, B=1)["input_ids"][:, :5]
    kwargs = dict(attention_mask=torch.ones_like(prompt), max_new_tokens=5, do_sample=False,
                  cache_implementation="static")
    eager = model.generate(prompt, **kwargs)
    torch._dynamo.reset()
    model.forward = torch.compile(model.forward, fullgraph=True, dynamic=False, backend="eager")
    assert torch.equal(model.generate(prompt, **kwargs), eager)


def assert_offloaded_quantization_is_the_whole_models(whole_model, directory, calib, cfg):
    """quantize_model on load_offloaded(directory) holds one block at a time
    and gives, tensor for tensor, what it gives on `whole_model` (the same
    checkpoint loaded whole, quantized here too). Returns the offloaded model."""
    import tacq_ext
    from tacq_ext.offload import load_offloaded, offload_of

    model = load_offloaded(directory)
    offload = offload_of(model)
    expected_report = tacq_ext.quantize_model(whole_model, calib, cfg, progress=False)
    report = tacq_ext.quantize_model(model, calib, cfg, progress=False)
    assert offload.peak_resident == 1 and report.kept == expected_report.kept
    expected, got = whole_model.state_dict(), model.state_dict()
    assert got.keys() == expected.keys()
    for key in expected:
        assert torch.equal(got[key], expected[key]), key
    return model
