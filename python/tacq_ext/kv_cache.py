"""Keeping key/value caches out of calibration passes, without depending on
the keyword a library passes its cache under."""

from __future__ import annotations

import sys
from contextlib import contextmanager

import torch
import torch.nn as nn


def is_kv_cache(value) -> bool:
    """True for a key/value cache object, whatever keyword or position it is
    passed under: an instance of transformers' public Cache class, or any
    object with a cache's interface (update() and get_seq_length())."""
    if value is None or isinstance(value, torch.Tensor):
        return False
    cache_type = getattr(sys.modules.get("transformers"), "Cache", None)
    if isinstance(cache_type, type) and isinstance(value, cache_type):
        return True
    return callable(getattr(value, "update", None)) and callable(getattr(value, "get_seq_length", None))


@contextmanager
def cache_disabled(model: nn.Module):
    """Runs a Hugging Face-style model with config.use_cache False, so its
    forward passes build no cache at all (models without one are untouched)."""
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "use_cache"):
        yield
        return
    saved = config.use_cache
    config.use_cache = False
    try:
        yield
    finally:
        config.use_cache = saved
