"""Calibration and evaluation data: readers for the task layouts users have
(prompt/answer jsonl, GSM8k jsonl, MMLU csv files, Spider json + tables.json) and the batches the
method consumes (HF style: input_ids, attention_mask, labels with -100 where
no loss is taken: the prompt and the padding)."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch


@dataclass(frozen=True)
class Example:
    """prompt: the model's input; answer: the gold continuation (the loss is
    taken on it); meta: whatever a scorer needs beyond the answer (the demo
    tasks' gold SQL ordering, correct letter, ...)."""

    prompt: str
    answer: str
    meta: dict = field(default_factory=dict, compare=False, hash=False)


def _jsonl(path) -> Iterator[dict]:
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{number}: not valid JSON ({e.msg})") from None


def _require(record: dict, keys, where: str) -> None:
    missing = [k for k in keys if k not in record]
    if missing:
        raise ValueError(f"{where}: missing field(s) {missing}")


def read_prompt_answer_jsonl(path) -> List[Example]:
    """One {"prompt": ..., "answer": ...} object per line."""
    out = []
    for i, r in enumerate(_jsonl(path), 1):
        _require(r, ("prompt", "answer"), f"{path} record {i}")
        out.append(Example(str(r["prompt"]), str(r["answer"])))
    return out


def read_gsm8k_jsonl(path) -> List[Example]:
    """GSM8k: {"question", "answer"} with worked steps ending in '#### N'."""
    out = []
    for i, r in enumerate(_jsonl(path), 1):
        _require(r, ("question", "answer"), f"{path} record {i}")
        out.append(Example(f"Question: {r['question']}\nAnswer:", " " + r["answer"]))
    return out


def _mmlu_subject(path: Path) -> str:
    """'high_school_mathematics' from high_school_mathematics_test.csv."""
    stem = path.stem
    for split in ("_test", "_dev", "_val", "_train"):
        if stem.endswith(split):
            stem = stem[: -len(split)]
    return stem.replace("_", " ")


def _read_mmlu_file(path: Path) -> List[Example]:
    header = f"The following are multiple choice questions (with answers) about {_mmlu_subject(path)}.\n\n"
    out = []
    with open(path, encoding="utf-8", newline="") as f:
        for i, row in enumerate(csv.reader(f), 1):
            if len(row) != 6 or row[5].strip() not in ("A", "B", "C", "D"):
                raise ValueError(f"{path} row {i}: expected question, A, B, C, D, answer letter")
            q, *choices, letter = row
            options = "\n".join(f"{l}. {c}" for l, c in zip("ABCD", choices))
            out.append(Example(f"{header}{q}\n{options}\nAnswer:", " " + letter.strip()))
    return out


def read_mmlu_csv(path) -> List[Example]:
    """MMLU: one <subject>_<split>.csv, or a directory of them (all subjects,
    in name order). No header; question, A, B, C, D, answer letter (quoted
    fields may span lines). The prompt names the subject."""
    path = Path(path)
    if not path.is_dir():
        return _read_mmlu_file(path)
    files = sorted(path.glob("*.csv"))
    if not files:
        raise ValueError(f"{path}: a directory of MMLU csv files must hold at least one *.csv")
    return [ex for f in files for ex in _read_mmlu_file(f)]


def _json_file(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e.msg})") from None


def _spider_schemas(tables_file: Path) -> Dict[str, str]:
    """{db_id: schema text} from Spider's tables.json: one line per table,
    `table(column type, ...)` with the original (SQL) names."""
    databases = _json_file(tables_file)
    if not isinstance(databases, list):
        raise ValueError(f"{tables_file}: expected a JSON list of databases")
    schemas = {}
    for i, db in enumerate(databases, 1):
        _require(db, ("db_id", "table_names_original", "column_names_original", "column_types"),
                 f"{tables_file} database {i}")
        columns: Dict[int, List[str]] = {}
        for (table, column), kind in zip(db["column_names_original"], db["column_types"]):
            if table >= 0:  # entry -1 is the '*' pseudo-column
                columns.setdefault(table, []).append(f"{column} {kind}")
        schemas[db["db_id"]] = "\n".join(f"{name}({', '.join(columns.get(t, []))})"
                                         for t, name in enumerate(db["table_names_original"]))
    return schemas


def read_spider_json(path) -> List[Example]:
    """Spider: a JSON list of {"db_id", "question", "query"}. When the
    directory also holds tables.json (Spider's layout), each prompt carries
    its database's schema."""
    path = Path(path)
    records = _json_file(path)
    if not isinstance(records, list):
        raise ValueError(f"{path}: expected a JSON list of examples")
    tables = path.parent / "tables.json"
    schemas = _spider_schemas(tables) if tables.is_file() and tables != path else None
    out = []
    for i, r in enumerate(records, 1):
        _require(r, ("db_id", "question", "query"), f"{path} example {i}")
        schema = ""
        if schemas is not None:
            if r["db_id"] not in schemas:
                raise ValueError(f"{path} example {i}: database {r['db_id']!r} is not described in {tables}")
            schema = f"Schema:\n{schemas[r['db_id']]}\n"
        out.append(Example(f"Database: {r['db_id']}\n{schema}Question: {r['question']}\nSQL:", " " + r["query"]))
    return out


READERS = {"jsonl": read_prompt_answer_jsonl, "gsm8k": read_gsm8k_jsonl, "mmlu": read_mmlu_csv,
           "spider": read_spider_json}


def read_examples(path, fmt: str = "auto") -> List[Example]:
    """fmt: jsonl | gsm8k | mmlu | spider | auto (a directory is MMLU; else by
    extension and fields)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found")
    if fmt == "auto":
        if path.is_dir() or path.suffix == ".csv":
            fmt = "mmlu"
        elif path.suffix == ".json":
            fmt = "spider"
        else:
            first = next(_jsonl(path), {})
            fmt = "gsm8k" if "question" in first else "jsonl"
    if fmt not in READERS:
        raise ValueError(f"unknown data format {fmt!r}; choose one of {sorted(READERS)} or auto")
    if path.is_dir() and fmt != "mmlu":
        raise ValueError(f"{path} is a directory; only the mmlu format reads directories (of per-subject csv files)")
    examples = READERS[fmt](path)
    if not examples:
        raise ValueError(f"{path} holds no examples")
    return examples


def encode(tokenizer, text: str) -> List[int]:
    """Token ids of text without special tokens (HF tokenizers or any .encode)."""
    try:
        return list(tokenizer.encode(text, add_special_tokens=False))
    except TypeError:
        return list(tokenizer.encode(text))


def encode_example(example: Example, tokenizer, max_length: Optional[int] = None,
                   bos_token_id: Optional[int] = None, eos_token_id: Optional[int] = None,
                   loss_on_prompt: bool = False) -> Tuple[List[int], List[int]]:
    """(ids, labels) of bos + prompt + answer (+ eos): labels are -100 on the
    prompt unless loss_on_prompt. With max_length, the prompt is truncated from
    the left so that the answer always fits."""
    answer = encode(tokenizer, example.answer) + ([eos_token_id] if eos_token_id is not None else [])
    prompt = ([bos_token_id] if bos_token_id is not None else []) + encode(tokenizer, example.prompt)
    if max_length is not None:
        if max_length < 2:
            raise ValueError(f"max_length must be at least 2, got {max_length}")
        answer = answer[: max_length - 1]
        prompt = prompt[-(max_length - len(answer)):]
    labels = (prompt if loss_on_prompt else [-100] * len(prompt)) + answer
    return prompt + answer, labels


def collate(encoded: Sequence[Tuple[List[int], List[int]]], pad_token_id: int = 0) -> Dict[str, torch.Tensor]:
    """[(ids, labels)] -> right-padded input_ids / attention_mask / labels."""
    length = max(len(ids) for ids, _ in encoded)
    input_ids = torch.full((len(encoded), length), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(encoded), length), dtype=torch.long)
    labels = torch.full((len(encoded), length), -100, dtype=torch.long)
    for row, (ids, row_labels) in enumerate(encoded):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention_mask[row, : len(ids)] = 1
        labels[row, : len(row_labels)] = torch.tensor(row_labels)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def make_batches(examples: Sequence[Example], tokenizer, batch_size: int = 4, max_length: int = 512,
                 bos_token_id: Optional[int] = None, eos_token_id: Optional[int] = None) -> List[dict]:
    """Calibration batches: right-padded, the loss on the answer tokens only
    (and eos_token_id, appended when given). bos_token_id defaults to the
    tokenizer's; the pad id is the tokenizer's, or 0."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    pad = getattr(tokenizer, "pad_token_id", None)
    bos = bos_token_id if bos_token_id is not None else getattr(tokenizer, "bos_token_id", None)
    encoded = [encode_example(ex, tokenizer, max_length, bos, eos_token_id) for ex in examples]
    return [collate(encoded[i: i + batch_size], 0 if pad is None else pad) for i in range(0, len(encoded), batch_size)]
