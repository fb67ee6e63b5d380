"""The split a task instance belongs to (instances are calib_data.Example)."""

from __future__ import annotations

import hashlib
from typing import Callable, Iterator, List

from ...calib_data import Example

SPLITS = ("train", "calib", "test")
_BUCKETS = 20  # by hash of the prompt: buckets 0-1 -> test, 2 -> calib, the rest -> train
_MAX_DRAWS_PER_EXAMPLE = 20000


def split_of(prompt: str) -> str:
    """Deterministic split of a question instance: a stable hash of its prompt,
    so the same instance can never land in two splits."""
    bucket = int.from_bytes(hashlib.sha1(prompt.encode()).digest()[:4], "little") % _BUCKETS
    return "test" if bucket < 2 else "calib" if bucket == 2 else "train"


def take_split(stream: Callable[[], Iterator[Example]], split: str, n: int, unique: bool = True,
               at_most: bool = False) -> List[Example]:
    """The first n instances of `stream()` that fall in `split` (distinct
    prompts when `unique`). If they seem exhausted (no new one in many
    draws): all there are with `at_most`, else an error."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    out, seen, since_last = [], set(), 0
    for ex in stream():
        since_last += 1
        if since_last > _MAX_DRAWS_PER_EXAMPLE:
            break
        if split_of(ex.prompt) != split or (unique and ex.prompt in seen):
            continue
        seen.add(ex.prompt)
        out.append(ex)
        since_last = 0
        if len(out) == n:
            return out
    if at_most and out:
        return out
    raise ValueError(f"only {len(out)} distinct {split} instances exist, asked for {n}")
