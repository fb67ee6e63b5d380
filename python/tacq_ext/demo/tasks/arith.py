"""arith (the GSM8k analogue): multi-step word problems with worked steps and
a final `#### <number>`, scored by exact match of that number."""

from __future__ import annotations

import random
import re
from typing import Iterator, Optional

from .example import Example

NAMES = ("Ann", "Ben", "Cara", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jo", "Kim", "Lee")
ITEMS = ("apples", "books", "coins", "pens", "cards", "shells", "stamps", "eggs")
GAINS = ("buys {n} more", "finds {n} more", "gets {n} more")
LOSSES = ("gives away {n}", "loses {n}", "sells {n}")
_FINAL = re.compile(r"####\s*(-?\d+)")


def _problem(rng: random.Random) -> Example:
    """2-3 steps, each adding or taking away a one-digit number from a total
    that starts at 5-30 and stays positive (at most 57): every worked step is
    `<= 2-digit +/- 1-digit`, an arithmetic a model of a few million
    parameters learns within the 30-minute training budget."""
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    total = rng.randint(5, 30)
    clauses, steps = [], []
    for _ in range(rng.randint(2, 3)):
        n = rng.randint(2, 9)
        if rng.random() < 0.5 or total <= n:
            clauses.append(rng.choice(GAINS).format(n=n))
            steps.append(f"{total}+{n}={total + n}")
            total += n
        else:
            clauses.append(rng.choice(LOSSES).format(n=n))
            steps.append(f"{total}-{n}={total - n}")
            total -= n
    start = steps[0].split("+")[0].split("-")[0]
    prompt = (f"Q: {name} has {start} {item}. {name} {', then '.join(clauses)}. "
              f"How many {item} now?\nA: ")
    return Example(prompt, "\n".join(steps) + f"\n#### {total}", {"number": str(total)})


def stream(seed: int) -> Iterator[Example]:
    rng = random.Random(seed)
    while True:
        yield _problem(rng)


def final_number(text: str) -> Optional[str]:
    match = _FINAL.search(text)
    return match.group(1) if match else None


def score(example: Example, completion: str) -> bool:
    return final_number(completion) == example.meta["number"]
