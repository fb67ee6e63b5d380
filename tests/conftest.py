"""Shared test fixtures: the devices to run on and a deterministic generator."""

import pytest
import torch

import tacq_ext  # noqa: F401  (registers torch.ops.tacq)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)
