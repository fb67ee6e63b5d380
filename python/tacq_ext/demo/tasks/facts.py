"""facts (the MMLU analogue): four-way multiple choice about a synthetic
knowledge base, scored by comparing the model's logits for the letters A-D.

Each option line is `<value> (<letter>)` and the answer names the value and
then its letter, `red (B)`: the model decodes greedily up to the `(` and the
letter with the highest logit there is its choice. (A model of a few million
parameters does not learn to emit a letter without the value first, the
ability large models only show at scale; with the value written first,
finding its letter is a copy from the option line.)

The knowledge base is small (16 entities x 3 attributes, 6 values each) and
learnable: training sees its statements and many question instances about
every fact. Test and calibration questions are other instances (distractor
set, option order, phrasing) about the same facts, so what they test is the
knowledge learned in training, as MMLU tests pretraining knowledge."""

from __future__ import annotations

import random
from typing import Dict, Iterator, List, Tuple

from .example import Example

LETTERS = "ABCD"
ATTRIBUTES: Dict[str, Tuple[str, ...]] = {
    "color": ("red", "blue", "green", "gold", "black", "white"),
    "food": ("rice", "fish", "bread", "figs", "soup", "nuts"),
    "tool": ("harp", "drum", "flute", "bell", "horn", "lute"),
}
QUESTIONS = ("What is the {attr} of {entity}?", "Which {attr} belongs to {entity}?",
             "{entity} has which {attr}?")
STATEMENTS = ("The {attr} of {entity} is {value}.", "{entity} has the {attr} {value}.")
_KB_SEED = 77


def entities() -> List[str]:
    """16 made-up names that share no first or last two letters."""
    return ["Bolor", "Kavin", "Midex", "Rumat", "Tesky", "Zuphen", "Garil", "Huxo", "Jaspo", "Lunet", "Nobra",
            "Pelik", "Quovy", "Sardu", "Wenca", "Yffel"]


def knowledge_base() -> Dict[Tuple[str, str], str]:
    """(entity, attribute) -> value, fixed by _KB_SEED."""
    rng = random.Random(_KB_SEED + 1)
    return {(e, a): rng.choice(values) for e in entities() for a, values in ATTRIBUTES.items()}


def statements() -> List[str]:
    """Every fact in every statement phrasing (training text, loss on all of it)."""
    return [s.format(attr=a, entity=e, value=v) for (e, a), v in knowledge_base().items() for s in STATEMENTS]


def _question(rng: random.Random, kb, open_book: bool = False) -> Example:
    (entity, attr), value = rng.choice(list(kb.items()))
    context = rng.choice(STATEMENTS).format(attr=attr, entity=entity, value=value) + "\n" if open_book else ""
    options = rng.sample([v for v in ATTRIBUTES[attr] if v != value], 3) + [value]
    rng.shuffle(options)
    letter = LETTERS[options.index(value)]
    lines = "".join(f"{o} ({l})\n" for l, o in zip(LETTERS, options))
    prompt = f"{context}{rng.choice(QUESTIONS).format(attr=attr, entity=entity)}\n{lines}Answer: "
    return Example(prompt, f"{value} ({letter})", {"letter": letter})


def stream(seed: int) -> Iterator[Example]:
    rng, kb = random.Random(seed), knowledge_base()
    while True:
        yield _question(rng, kb)


def open_book_stream(seed: int) -> Iterator[Example]:
    """Training only: questions preceded by the statement that answers them,
    which teach matching the known value to its letter; the evaluated
    questions are always closed-book."""
    rng, kb = random.Random(seed), knowledge_base()
    while True:
        yield _question(rng, kb, open_book=True)
