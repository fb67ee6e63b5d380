"""The three task suites by name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, List

from . import arith, facts, sql
from .example import SPLITS, Example, split_of, take_split


@dataclass(frozen=True)
class Task:
    """name; stream(seed) -> endless instances; kind "generate" (greedy
    decoding up to max_new_tokens, then make_scorer()(example, completion))
    or "choice" (greedy decoding up to the option's `(`, then the letter with
    the highest logit)."""

    name: str
    stream: Callable[[int], Iterator[Example]]
    kind: str
    max_new_tokens: int = 0
    make_scorer: Callable[[], Callable[[Example, str], bool]] = None


TASKS = {
    "arith": Task("arith", arith.stream, "generate", 48, lambda: arith.score),
    "sql": Task("sql", sql.stream, "generate", 150, sql.SqlScorer),
    "facts": Task("facts", facts.stream, "choice", 12),
}
TEST_SEED = 2025  # the seed of every split's stream; splits differ by prompt hash


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose from {', '.join(TASKS)}")
    return TASKS[name]


def load_split(name: str, split: str, n: int, seed: int = TEST_SEED, at_most: bool = False) -> List[Example]:
    """The first n distinct instances of task `name` in `split` (with
    `at_most`, fewer if fewer exist: sql has 309 test instances)."""
    task = get_task(name)
    return take_split(lambda: task.stream(seed), split, n, at_most=at_most)


__all__ = ["TASKS", "Task", "Example", "SPLITS", "get_task", "load_split", "split_of"]
