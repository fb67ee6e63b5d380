"""The demo model's character-level tokenizer: printable ASCII and newline,
plus pad/bos/eos, in a fixed 128-entry vocabulary. It is saved beside the
model as a Hugging Face tokenizer (tokenizer.json, a `tokenizers` WordLevel
model over single characters, and tokenizer_config.json), so AutoTokenizer
and every Hugging Face tool load it with the same ids; CharTokenizer reads
the same file for the demo's own fast loops."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Sequence

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
PAD, BOS, EOS = 0, 1, 2
SPECIAL_TOKENS = {"<pad>": PAD, "<s>": BOS, "</s>": EOS}
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

    def save(self, directory, model_max_length: int = 256) -> None:
        """tokenizer.json and tokenizer_config.json in `directory`."""
        from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

        vocab = {**SPECIAL_TOKENS, **self._ids}
        tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
        tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex("[\\s\\S]"), behavior="isolated")  # each character
        tokenizer.decoder = decoders.Fuse()
        tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
        tokenizer.save(str(Path(directory, TOKENIZER_FILE)))
        config = {"tokenizer_class": "PreTrainedTokenizerFast", "pad_token": "<pad>", "bos_token": "<s>",
                  "eos_token": "</s>", "model_max_length": model_max_length, "clean_up_tokenization_spaces": False}
        Path(directory, TOKENIZER_CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")

    @classmethod
    def load(cls, directory) -> "CharTokenizer":
        """The characters of the tokenizer.json in `directory`, in id order."""
        path = Path(directory, TOKENIZER_FILE)
        if not path.is_file():
            raise FileNotFoundError(f"no {TOKENIZER_FILE} in {directory}")
        try:
            vocab = json.loads(path.read_text())["model"]["vocab"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{path} is not a Hugging Face tokenizer file ({e})") from None
        by_id = sorted((i, token) for token, i in vocab.items() if token not in SPECIAL_TOKENS)
        if any(vocab.get(t) != i for t, i in SPECIAL_TOKENS.items()) or \
                [i for i, _ in by_id] != list(range(_FIRST_CHAR, _FIRST_CHAR + len(by_id))) or \
                any(len(token) != 1 for _, token in by_id):
            raise ValueError(f"{path} is not the demo's character vocabulary (special tokens at 0-2, "
                             f"then one character per id)")
        return cls("".join(token for _, token in by_id))
