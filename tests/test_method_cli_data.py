"""Calibration readers (incl. the real GSM8k / MMLU layouts from ../shared when
present) and the `tacq` command line on a local Hugging Face model directory."""

import json
from pathlib import Path

import pytest
import torch

from tacq_ext import cli
from tacq_ext.calib_data import Example, make_batches, read_examples

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"


class CharTokenizer:
    """Minimal tokenizer with .encode, one id per character."""
    pad_token_id = 0
    bos_token_id = 1

    def encode(self, text):
        return [2 + (ord(c) % 40) for c in text]


def test_prompt_answer_jsonl_and_batches(tmp_path):
    f = tmp_path / "calib.jsonl"
    f.write_text('{"prompt": "2+2=", "answer": "4"}\n\n{"prompt": "hello ", "answer": "world"}\n')
    examples = read_examples(f)
    assert examples == [Example("2+2=", "4"), Example("hello ", "world")]
    batch = make_batches(examples, CharTokenizer(), batch_size=2)[0]
    assert batch["input_ids"].shape == (2, 12)
    # sample 0: bos + "2+2=" (5 tokens, no loss) + "4" (loss), then padding
    assert batch["labels"][0].tolist()[:6] == [-100] * 5 + [2 + ord("4") % 40]
    assert batch["labels"][0, 6:].eq(-100).all() and batch["attention_mask"][0].sum() == 6
    assert (batch["labels"][1] != -100).sum() == 5


def test_max_length_keeps_the_answer(tmp_path):
    batch = make_batches([Example("x" * 50, "abc")], CharTokenizer(), max_length=10)[0]
    assert batch["input_ids"].shape[1] == 10 and (batch["labels"] != -100).sum() == 3


def test_spider_reader(tmp_path):
    f = tmp_path / "dev.json"
    f.write_text(json.dumps([{"db_id": "shop", "question": "How many items?", "query": "SELECT count(*) FROM items"}]))
    (ex,) = read_examples(f)
    assert ex.answer == " SELECT count(*) FROM items" and "shop" in ex.prompt


def test_bad_files(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a"}\n')
    with pytest.raises(ValueError, match="missing field"):
        read_examples(bad)
    bad.write_text("{nope\n")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_examples(bad)
    csv = tmp_path / "bad.csv"
    csv.write_text("q,a,b,c,d,E\n")
    with pytest.raises(ValueError, match="answer letter"):
        read_examples(csv)
    with pytest.raises(FileNotFoundError):
        read_examples(tmp_path / "missing.jsonl")


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/datasets not present")
def test_real_gsm8k_and_mmlu_layouts():
    gsm = read_examples(SHARED / "gsm8k" / "test_sample.jsonl")
    assert len(gsm) == 100 and gsm[0].answer.strip().endswith("#### 18")
    mmlu = read_examples(SHARED / "mmlu" / "test" / "high_school_mathematics_test.csv")
    assert len(mmlu) == 270 and all(e.answer in (" A", " B", " C", " D") for e in mmlu)
    assert "\nD. " in mmlu[0].prompt


@pytest.fixture(scope="module")
def hf_model_dir(tmp_path_factory):
    """A tiny random Llama with a character-level fast tokenizer, saved locally."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    chars = [chr(c) for c in range(32, 127)] + ["\n"]
    vocab = {"<pad>": 0, "<s>": 1, "<unk>": 2, **{c: i + 3 for i, c in enumerate(chars)}}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<s>", unk_token="<unk>")
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(vocab), hidden_size=64, intermediate_size=96,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                         max_position_embeddings=128, pad_token_id=0, bos_token_id=1))
    path = tmp_path_factory.mktemp("hf") / "tiny"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_cli_quantize_info_eval(tmp_path, hf_model_dir, capsys):
    data = tmp_path / "calib.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"{a}+{a}=", "answer": str(2 * a)}) + "\n" for a in range(12)))
    out = tmp_path / "q"
    assert cli.main(["quantize", "--model", str(hf_model_dir), "--calib", str(data), "--bits", "3",
                     "--ratio", "0.01", "--method", "tacq", "--out", str(out), "--quiet"]) == 0
    assert (out / "model.safetensors").is_file() and (out / "tacq_config.json").is_file()
    assert cli.main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "method tacq, 3 bits" in text and "model.layers.1.mlp.down_proj" in text
    assert cli.main(["eval", "--model", str(hf_model_dir), "--quantized", str(out), "--data", str(data),
                     "--max-samples", "3"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["examples"] == 3 and 0.0 <= result["exact_match"] <= 1.0 and result["answer_loss"] > 0


def test_cli_reports_bad_input(tmp_path, hf_model_dir, capsys):
    assert cli.main(["info", str(tmp_path)]) == 2
    assert "not a tacq checkpoint" in capsys.readouterr().err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert cli.main(["quantize", "--model", str(hf_model_dir), "--calib", str(empty), "--out",
                     str(tmp_path / "o"), "--quiet"]) == 2
    assert "no examples" in capsys.readouterr().err
