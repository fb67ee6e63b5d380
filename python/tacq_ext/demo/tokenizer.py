"""The demo model's character-level tokenizer: printable ASCII and newline,
plus pad/bos/eos, in a fixed 128-entry vocabulary saved as JSON beside the
model (loads with no network and no tokenizer library)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Sequence

TOKENIZER_FILE = "char_tokenizer.json"
PAD, BOS, EOS = 0, 1, 2
_FIRST_CHAR = 3
VOCAB_SIZE = 128


class CharTokenizer:
    def __init__(self, chars: str = "\n" + "".join(chr(c) for c in range(32, 127))):
        if len(chars) + _FIRST_CHAR > VOCAB_SIZE:
            raise ValueError(f"chars has {len(chars)} characters, at most {VOCAB_SIZE - _FIRST_CHAR} fit")
        self.chars = chars
        self._ids = {c: i + _FIRST_CHAR for i, c in enumerate(chars)}
        self.pad_token_id, self.bos_token_id, self.eos_token_id = PAD, BOS, EOS
        self.vocab_size = VOCAB_SIZE

    def encode(self, text: str) -> List[int]:
        try:
            return [self._ids[c] for c in text]
        except KeyError as e:
            raise ValueError(f"text has a character outside the tokenizer's vocabulary: {e.args[0]!r}") from None

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ids up to the first eos; pad and bos are skipped."""
        out = []
        for i in ids:
            if i == EOS:
                break
            if i >= _FIRST_CHAR:
                out.append(self.chars[i - _FIRST_CHAR])
        return "".join(out)

    def save(self, directory) -> None:
        Path(directory, TOKENIZER_FILE).write_text(json.dumps({"chars": self.chars, "pad": PAD, "bos": BOS,
                                                                "eos": EOS, "vocab_size": VOCAB_SIZE}))

    @classmethod
    def load(cls, directory) -> "CharTokenizer":
        path = Path(directory, TOKENIZER_FILE)
        if not path.is_file():
            raise FileNotFoundError(f"no {TOKENIZER_FILE} in {directory}")
        return cls(json.loads(path.read_text())["chars"])
