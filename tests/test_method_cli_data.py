"""Calibration readers (incl. the real GSM8k / MMLU layouts from ../shared when
present) and the `tacq` command line on a local Hugging Face model directory."""

import json
import os
from pathlib import Path

import pytest
import torch

from tacq_ext import cli
from tacq_ext.calib_data import Example, collate, encode_example, make_batches, read_examples

from method_fixtures import save_tiny_hf_model



def datasets_dir() -> Path:
    """$TACQ_DATASETS, else shared/datasets in the nearest ancestor that has
    one (../shared from the main checkout, the same folder from a worktree)."""
    if os.environ.get("TACQ_DATASETS"):
        return Path(os.environ["TACQ_DATASETS"])
    for parent in Path(__file__).resolve().parents:
        if (parent / "shared" / "datasets").is_dir():
            return parent / "shared" / "datasets"
    return Path(__file__).resolve().parents[2] / "shared" / "datasets"


SHARED = datasets_dir()


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


def test_eos_is_appended_to_the_answer_and_carries_loss():
    (batch,) = make_batches([Example("ab", "c"), Example("a", "bcd")], CharTokenizer(), eos_token_id=39)
    enc = CharTokenizer().encode
    assert batch["input_ids"][0].tolist() == [1] + enc("ab") + enc("c") + [39, 0]
    assert batch["labels"][0].tolist() == [-100, -100, -100] + enc("c") + [39, -100]
    assert batch["labels"][1].tolist() == [-100, -100] + enc("bcd") + [39]


def test_max_length_truncates_the_prompt_from_the_left_after_eos():
    ids, labels = encode_example(Example("0123456789", "ab"), CharTokenizer(), max_length=6,
                                 bos_token_id=1, eos_token_id=39)
    enc = CharTokenizer().encode
    assert ids == enc("789") + enc("ab") + [39] and labels == [-100] * 3 + enc("ab") + [39]
    with pytest.raises(ValueError, match="max_length"):
        encode_example(Example("a", "b"), CharTokenizer(), max_length=1)


def test_loss_on_prompt_and_collate_padding():
    encoded = [encode_example(Example("ab", "c"), CharTokenizer(), bos_token_id=1, loss_on_prompt=True),
               encode_example(Example("a", ""), CharTokenizer(), bos_token_id=1)]
    batch = collate(encoded, pad_token_id=7)
    assert batch["labels"][0].tolist() == encoded[0][0]
    assert batch["input_ids"][1].tolist() == [1] + CharTokenizer().encode("a") + [7, 7]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]


def test_demo_tasks_use_the_same_example_type():
    from tacq_ext.demo.tasks import Example as TaskExample, load_split

    assert TaskExample is Example
    (example,) = load_split("arith", "calib", 1)
    assert isinstance(example, Example) and example.meta


def test_spider_reader(tmp_path):
    f = tmp_path / "dev.json"
    f.write_text(json.dumps([{"db_id": "shop", "question": "How many items?", "query": "SELECT count(*) FROM items"}]))
    (ex,) = read_examples(f)
    assert ex.answer == " SELECT count(*) FROM items" and "shop" in ex.prompt


def write_spider(tmp_path, db_id="shop"):
    (tmp_path / "dev.json").write_text(json.dumps([{"db_id": db_id, "question": "How many items?",
                                                     "query": "SELECT count(*) FROM items"}]))
    (tmp_path / "tables.json").write_text(json.dumps([{
        "db_id": "shop",
        "table_names_original": ["items", "orders"],
        "table_names": ["items", "orders"],
        "column_names_original": [[-1, "*"], [0, "id"], [0, "name"], [1, "item_id"]],
        "column_names": [[-1, "*"], [0, "id"], [0, "name"], [1, "item id"]],
        "column_types": ["text", "number", "text", "number"],
        "primary_keys": [1], "foreign_keys": [[3, 1]]}]))
    return tmp_path / "dev.json"


def test_spider_reader_with_tables_json(tmp_path):
    (ex,) = read_examples(write_spider(tmp_path))
    assert ex.prompt == ("Database: shop\nSchema:\nitems(id number, name text)\norders(item_id number)\n"
                         "Question: How many items?\nSQL:")
    assert ex.answer == " SELECT count(*) FROM items"
    with pytest.raises(ValueError, match="database 'zoo' is not described in .*tables.json"):
        read_examples(write_spider(tmp_path, db_id="zoo"))


def write_mmlu(folder, subject, rows):
    folder.mkdir(exist_ok=True)
    (folder / f"{subject}_test.csv").write_text("".join(",".join(r) + "\n" for r in rows))


def test_mmlu_file_and_directory(tmp_path):
    write_mmlu(tmp_path / "test", "virology", [("Q1?", "a", "b", "c", "d", "B")])
    write_mmlu(tmp_path / "test", "anatomy", [("Q2?", "e", "f", "g", "h", "D"), ("Q3?", "i", "j", "k", "l", "A")])
    examples = read_examples(tmp_path / "test")
    assert [e.answer for e in examples] == [" D", " A", " B"]  # subjects in name order
    assert examples[0].prompt == ("The following are multiple choice questions (with answers) about anatomy.\n\n"
                                  "Q2?\nA. e\nB. f\nC. g\nD. h\nAnswer:")
    assert examples[2].prompt.startswith("The following are multiple choice questions (with answers) about virology.")
    assert read_examples(tmp_path / "test" / "virology_test.csv") == examples[2:]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="at least one"):
        read_examples(tmp_path / "empty")
    with pytest.raises(ValueError, match="only the mmlu format reads directories"):
        read_examples(tmp_path / "test", "gsm8k")


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


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} not present (set TACQ_DATASETS)")
def test_real_gsm8k_and_mmlu_layouts():
    gsm = read_examples(SHARED / "gsm8k" / "test_sample.jsonl")
    assert len(gsm) == 100 and gsm[0].answer.strip().endswith("#### 18")
    mmlu = read_examples(SHARED / "mmlu" / "test" / "high_school_mathematics_test.csv")
    assert len(mmlu) == 270 and all(e.answer in (" A", " B", " C", " D") for e in mmlu)
    assert "\nD. " in mmlu[0].prompt and "about high school mathematics." in mmlu[0].prompt
    every_subject = read_examples(SHARED / "mmlu" / "test")
    assert len(every_subject) == 100 + 270 and every_subject[100:] == mmlu
    assert "about college computer science." in every_subject[0].prompt


@pytest.fixture(scope="module")
def hf_model_dir(tmp_path_factory):
    """A tiny random Llama with a character-level fast tokenizer, saved locally."""
    return save_tiny_hf_model(tmp_path_factory.mktemp("hf") / "tiny")


def test_cli_quantize_info_eval(tmp_path, hf_model_dir, capsys):
    data = tmp_path / "calib.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"{a}+{a}=", "answer": str(2 * a)}) + "\n" for a in range(12)))
    out = tmp_path / "q"
    assert cli.main(["quantize", "--model", str(hf_model_dir), "--calib", str(data), "--bits", "3",
                     "--ratio", "0.01", "--method", "tacq", "--out", str(out), "--quiet",
                     "--activation-checkpointing"]) == 0
    assert (out / "model.safetensors").is_file() and (out / "tacq_config.json").is_file()
    from transformers import AutoModelForCausalLM
    loaded = AutoModelForCausalLM.from_pretrained(out)  # the CLI's output is a Hugging Face checkpoint too
    assert loaded.config.quantization_config.bits == 3
    capsys.readouterr()
    assert cli.main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "method tacq, 3 bits" in text and "model.layers.1.mlp.down_proj" in text
    config = json.loads((out / "tacq_config.json").read_text())
    down = config["layers"]["model.layers.1.mlp.down_proj"]
    row = next(line for line in text.splitlines() if line.startswith("model.layers.1.mlp.down_proj"))
    assert row.split()[1:] == ["64x96", "3", "-1", str(down["nnz"]), f"{down['avg_bits']:.3f}",
                               f"{down['avg_bits'] * 64 * 96 / 8 / 1024:.1f}"]
    assert config["weights_sha256"] in text
    assert cli.main(["eval", "--model", str(hf_model_dir), "--quantized", str(out), "--data", str(data),
                     "--max-samples", "3"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["examples"] == 3 and 0.0 <= result["exact_match"] <= 1.0 and result["answer_loss"] > 0


def test_cli_device_dtype_and_meta_skeleton(tmp_path, hf_model_dir, capsys, monkeypatch):
    import tacq_ext

    data = tmp_path / "calib.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"{a}*3=", "answer": str(3 * a)}) + "\n" for a in range(6)))
    out = tmp_path / "q"
    assert cli.main(["quantize", "--model", str(hf_model_dir), "--calib", str(data), "--bits", "2", "--ratio",
                     "0.01", "--method", "gptq", "--out", str(out), "--quiet", "--device", "cpu",
                     "--dtype", "bfloat16"]) == 0
    capsys.readouterr()
    from safetensors import safe_open
    with safe_open(str(out / "model.safetensors"), "pt") as f:  # quantized in bf16
        assert f.get_tensor("model.embed_tokens.weight").dtype == torch.bfloat16
    skeletons = []
    real_load = tacq_ext.load_quantized

    def spy(path, model, device=None):
        skeletons.append({t.device.type for t in model.parameters()})
        loaded = real_load(path, model, device)
        skeletons.append({t.dtype for n, t in loaded.named_parameters()})
        return loaded

    monkeypatch.setattr(tacq_ext, "load_quantized", spy)
    # no --model: config and tokenizer come from the checkpoint directory
    assert cli.main(["eval", "--quantized", str(out), "--data", str(data), "--max-samples", "2",
                     "--dtype", "float32"]) == 0
    assert skeletons == [{"meta"}, {torch.float32}]
    assert json.loads(capsys.readouterr().out)["examples"] == 2
    with pytest.raises(SystemExit):
        cli.main(["eval", "--quantized", str(out), "--data", str(data), "--dtype", "float64"])
    capsys.readouterr()
    assert cli.main(["eval", "--quantized", str(out), "--data", str(data), "--device", "nowhere"]) == 2
    assert "--device 'nowhere' is not a device" in capsys.readouterr().err


def test_cli_reports_bad_input(tmp_path, hf_model_dir, capsys):
    assert cli.main(["info", str(tmp_path)]) == 2
    assert "not a tacq checkpoint" in capsys.readouterr().err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert cli.main(["quantize", "--model", str(hf_model_dir), "--calib", str(empty), "--out",
                     str(tmp_path / "o"), "--quiet"]) == 2
    assert "no examples" in capsys.readouterr().err


def test_cli_model_without_a_tokenizer(tmp_path, hf_model_dir, capsys):
    import shutil

    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(hf_model_dir / name, bare / name)
    data = tmp_path / "calib.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"{a}+1=", "answer": str(a + 1)}) + "\n" for a in range(4)))
    out = tmp_path / "q"
    args = ["quantize", "--model", str(bare), "--calib", str(data), "--bits", "3", "--method", "rtn",
            "--out", str(out), "--quiet"]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert f"{bare} has no Hugging Face tokenizer" in err and "--tokenizer" in err
    assert not out.exists()
    assert cli.main(args + ["--tokenizer", str(hf_model_dir)]) == 0
    assert (out / "tokenizer_config.json").is_file()
