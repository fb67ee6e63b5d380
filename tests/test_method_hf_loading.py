"""Hugging Face-native loading: AutoModelForCausalLM.from_pretrained on a
directory written by save_quantized, against load_quantized on the same one."""

import copy
import io
import json
import shutil

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

import tacq_ext
from tacq_ext import TACQConfig
from tacq_ext.serialization import quantization_config

from method_fixtures import assert_compiled_decoding_matches_eager, lm_batch, tiny_llama

CFG = TACQConfig(bits=3, ratio=0.05, method="tacq", reference="rtn")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """(checkpoint directory, the in-memory quantized model)."""
    out = tmp_path_factory.mktemp("hf") / "q"
    model = tiny_llama()
    report = tacq_ext.quantize_model(model, [lm_batch(40), lm_batch(41)], CFG, progress=False)
    tacq_ext.save_quantized(model, out, cfg=CFG, report=report, calibration="two random batches")
    return out, model


def skeleton_load(path, dtype):
    config = AutoConfig.from_pretrained(path)
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return tacq_ext.load_quantized(path, skeleton).eval()


def logits(model, seed=42):
    with torch.no_grad():
        return model(input_ids=lm_batch(seed)["input_ids"]).logits


def test_config_json_declares_the_method(saved):
    path, _ = saved
    config = json.loads((path / "config.json").read_text())
    assert config["quantization_config"] == {
        "quant_method": "tacq", "format_version": 1, "bits": 3, "group_size": -1, "ratio": 0.05,
        "method": "tacq", "reference": "rtn", "layers": {}}
    assert config["model_type"] == "llama" and config["dtype"] == "float32"
    assert (path / "tacq_config.json").is_file() and (path / "generation_config.json").is_file()


def test_layers_that_differ_from_the_method_settings_are_listed():
    a = tacq_ext.QuantizedLinear(64, 8, 3, -1)
    b = tacq_ext.QuantizedLinear(64, 8, 2, 32)
    assert quantization_config(CFG, {"a": a, "b": b})["layers"] == {"b": {"bits": 2, "group_size": 32}}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_from_pretrained_equals_load_quantized(saved, dtype):
    path, model = saved
    loaded = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, device_map="cpu")
    q = loaded.get_submodule("model.layers.1.mlp.down_proj")
    assert isinstance(q, tacq_ext.QuantizedLinear)
    assert q.scale.dtype == q.zero.dtype == q.values.dtype == torch.float16 and q.packed.dtype == torch.int32
    assert loaded.model.embed_tokens.weight.dtype == dtype
    assert isinstance(loaded.lm_head, tacq_ext.Bf16GemvLinear)  # unquantized: the bf16 GEMV where it applies
    ours = logits(loaded)
    assert ours.dtype == dtype
    skeleton_loaded = skeleton_load(path, dtype)
    assert isinstance(skeleton_loaded.lm_head, tacq_ext.Bf16GemvLinear)
    assert torch.equal(ours, logits(skeleton_loaded))
    if dtype == torch.float32:
        assert torch.equal(ours, logits(model))


def test_generate_and_save_pretrained_round_trip(saved, tmp_path):
    path, model = saved
    loaded = AutoModelForCausalLM.from_pretrained(path)
    prompt = lm_batch(43, B=1)["input_ids"][:, :5]
    generated = loaded.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=6, do_sample=False)
    assert generated.shape == (1, 11)
    assert torch.equal(generated, model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=6,
                                                 do_sample=False))
    loaded.save_pretrained(tmp_path / "again")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "again")
    assert torch.equal(logits(again), logits(loaded))
    before = json.loads((path / "tacq_config.json").read_text())
    after = json.loads((tmp_path / "again" / "tacq_config.json").read_text())
    assert after["layers"] == before["layers"] and after["calibration"] == "two random batches"
    with pytest.raises(ValueError, match="writes a local directory"):
        loaded.save_pretrained(tmp_path / "hub", push_to_hub=True)


def test_save_pretrained_of_a_model_quantized_in_process_writes_tacq(saved, tmp_path):
    """transformers' own save_pretrained would write a directory that loads
    as an unquantized model with fresh random layers (a warning only):
    after quantize_model it writes the TACQ format; a deep copy and an
    unpickled model save themselves."""
    _, model = saved
    model.save_pretrained(tmp_path / "direct")
    assert (tmp_path / "direct" / "tacq_config.json").is_file()
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "direct")
    assert isinstance(loaded.model.layers[0].mlp.down_proj, tacq_ext.QuantizedLinear)
    assert torch.equal(logits(loaded), logits(model))
    copied = copy.deepcopy(model)
    with torch.no_grad():
        copied.model.norm.weight.mul_(2)
    copied.save_pretrained(tmp_path / "copy")
    assert torch.equal(logits(AutoModelForCausalLM.from_pretrained(tmp_path / "copy")), logits(copied))
    assert not torch.equal(logits(copied), logits(model))
    buffer = io.BytesIO()
    torch.save(model, buffer)  # the whole model still pickles, and its copy saves itself
    buffer.seek(0)
    unpickled = torch.load(buffer, weights_only=False)
    unpickled.save_pretrained(tmp_path / "unpickled")
    assert torch.equal(logits(AutoModelForCausalLM.from_pretrained(tmp_path / "unpickled")), logits(model))
    assert unpickled.save_pretrained.model is unpickled


def test_save_pretrained_after_load_quantized_round_trips(saved, tmp_path):
    path, _ = saved
    loaded = skeleton_load(path, torch.float32)
    loaded.save_pretrained(tmp_path / "again")
    assert torch.equal(logits(AutoModelForCausalLM.from_pretrained(tmp_path / "again")), logits(loaded))
    after = json.loads((tmp_path / "again" / "tacq_config.json").read_text())
    assert after["calibration"] == "two random batches" and after["bits"] == CFG.bits


def test_a_directory_without_tacq_config_is_refused(saved, tmp_path):
    path, _ = saved
    partial = shutil.copytree(path, tmp_path / "partial")
    (partial / "tacq_config.json").unlink()
    with pytest.raises(ValueError, match="written by tacq_ext.save_quantized.*has no tacq_config.json"):
        AutoModelForCausalLM.from_pretrained(partial)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_static_cache_decoding_compiles_without_graph_breaks(saved, dtype):
    """The whole decoding step, custom ops included (in bf16 the LM head's
    bf16_gemv too, on CPUs with AVX-512 BF16), is one graph (fullgraph=True
    raises on any break), with the same tokens as eager decoding."""
    path, _ = saved
    assert_compiled_decoding_matches_eager(AutoModelForCausalLM.from_pretrained(path, dtype=dtype))


def test_generate_compiles_decoding_as_for_unquantized_models(saved, monkeypatch):
    """transformers compiles generate()'s decoding steps under a static KV
    cache (on CUDA by default, on the CPU when compile_config allows it) only
    for quantizers that call themselves compileable. TACQ's does: generate()
    compiles the model, and the tokens are eager decoding's."""
    from transformers import CompileConfig

    path, _ = saved
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    assert model.hf_quantizer.is_compileable
    if not hasattr(CompileConfig, "_compile_all_devices"):
        pytest.skip("this transformers has no CompileConfig switch for compiling on the CPU")
    prompt = lm_batch(45, B=1)["input_ids"][:, :5]
    kwargs = dict(attention_mask=torch.ones_like(prompt), max_new_tokens=5, do_sample=False,
                  cache_implementation="static")
    eager = model.generate(prompt, **kwargs)  # on the CPU, no compile_config: eager

    compiled = []
    real_compile = torch.compile

    def recording_compile(fn, **options):
        compiled.append(options)
        return real_compile(fn, **options)

    monkeypatch.setattr(torch, "compile", recording_compile)
    config = CompileConfig(fullgraph=True, dynamic=False, backend="eager", mode=None)
    config._compile_all_devices = True  # what CUDA devices get by default
    torch._dynamo.reset()
    assert torch.equal(model.generate(prompt, compile_config=config, **kwargs), eager)
    assert len(compiled) == 1 and compiled[0]["fullgraph"]
