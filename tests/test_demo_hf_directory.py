"""The shipped demo model is a complete Hugging Face model directory: its
tokenizer loads with AutoTokenizer (same ids as the demo's own), and the
`tacq` commands, from_pretrained and generate all run on it offline."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tacq_ext import QuantizedLinear, cli
from tacq_ext.demo.command import write_task_files
from tacq_ext.demo.model import ASSET_DIR
from tacq_ext.demo.tasks import TASKS, load_split
from tacq_ext.demo.tokenizer import BOS, EOS, PAD, CharTokenizer


@pytest.fixture(scope="module")
def hf_tokenizer():
    return AutoTokenizer.from_pretrained(ASSET_DIR, local_files_only=True)


def test_auto_tokenizer_gives_the_demo_ids(hf_tokenizer):
    ours = CharTokenizer.load(ASSET_DIR)
    assert (hf_tokenizer.pad_token_id, hf_tokenizer.bos_token_id, hf_tokenizer.eos_token_id) == (PAD, BOS, EOS)
    for task in TASKS:
        for ex in load_split(task, "test", 5):
            text = ex.prompt + ex.answer
            ids = hf_tokenizer.encode(text, add_special_tokens=False)
            assert ids == ours.encode(text)
            assert hf_tokenizer.decode(ids) == text == ours.decode(ids)


def test_the_tokenizer_file_is_checked(tmp_path):
    (tmp_path / "tokenizer.json").write_text(json.dumps({"model": {"vocab": {"<pad>": 0, "<s>": 1, "</s>": 2,
                                                                              "ab": 3}}}))
    with pytest.raises(ValueError, match="not the demo's character vocabulary"):
        CharTokenizer.load(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{")
    with pytest.raises(ValueError, match="not a Hugging Face tokenizer file"):
        CharTokenizer.load(tmp_path)


def test_quantize_eval_from_pretrained_and_generate(tmp_path, hf_tokenizer, capsys):
    write_task_files(tmp_path / "data", ["arith"], calib_size=8, test_size=4)
    calib, test = tmp_path / "data" / "arith_calib.jsonl", tmp_path / "data" / "arith_test.jsonl"
    out = tmp_path / "q"
    assert cli.main(["quantize", "--model", str(ASSET_DIR), "--calib", str(calib), "--bits", "3",
                     "--group-size", "64", "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    assert cli.main(["eval", "--quantized", str(out), "--data", str(test), "--max-samples", "4"]) == 0
    assert json.loads(capsys.readouterr().out)["examples"] == 4
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    assert isinstance(model.model.layers[0].mlp.down_proj, QuantizedLinear)
    tokenizer = AutoTokenizer.from_pretrained(out)
    example = load_split("arith", "test", 1)[0]
    prompt = torch.tensor([[BOS] + tokenizer.encode(example.prompt, add_special_tokens=False)])
    generated = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=48, do_sample=False,
                               eos_token_id=EOS, pad_token_id=PAD)
    completion = tokenizer.decode(generated[0, prompt.shape[1]:], skip_special_tokens=True)
    assert completion.startswith(example.answer.split("\n")[0]), (completion, example.answer)
