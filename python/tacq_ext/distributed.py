"""Data-parallel calibration over torch.distributed (docs/distributed.md).

Every rank holds the whole model and runs its own calibration batches. What
one process sums over batches is summed over ranks: gradient accumulators
(dist.reduce) and Hessians (compensated sums sent to it, so the result is one
process's) go to the rank that owns their layer, which alone
scores and quantizes it and then broadcasts the result to every rank. The
global top-k needs only counts summed over ranks. Ranks.single() is one
process: no collective is ever called.

Errors: every stage that runs local code (forward/backward passes, GPTQ,
checks) is wrapped in Ranks.agree, which sums an error flag over the ranks
before any further collective, so a rank that raises makes every rank raise
(RankFailed, naming it and its error) instead of leaving the others waiting
in a collective.
"""

from __future__ import annotations

import datetime
import os
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist

from .gptq import HessianAccumulator


class RankFailed(RuntimeError):
    """Raised on the other ranks when one rank failed a stage."""


def assign_owners(groups: Sequence[Sequence[Tuple[str, float]]], world: int) -> Dict[str, int]:
    """{layer: owner rank}. Group by group (a decoder block, whose layers are
    quantized at the same time), the costliest layer first goes to the least
    loaded rank so far (ties: lowest rank): the ranks finish a block together,
    and single-layer groups take turns."""
    owners, load = {}, [0.0] * world
    for group in groups:
        for name, cost in sorted(group, key=lambda item: -item[1]):
            rank = min(range(world), key=lambda r: (load[r], r))
            owners[name] = rank
            load[rank] += cost
    return owners


def gptq_cost(out_features: int, in_features: int) -> float:
    """Relative GPTQ time of an [N, K] layer: the fp64 factorizations (K^3),
    the column steps' updates (N K) and their fixed cost (K), weighted as
    fitted to bench/layer_costs.py's CPU timings (within 30 % for every layer)."""
    n, k = float(out_features), float(in_features)
    return 1e-10 * k**3 + 0.9e-6 * n * k + 2e-4 * k


class Ranks:
    """This process's place in a data-parallel run: its rank, the number of
    ranks, and which rank owns (scores and quantizes) each target layer."""

    def __init__(self, rank: int = 0, world: int = 1, owners: Optional[Dict[str, int]] = None,
                 device: Optional[torch.device] = None):
        self.rank, self.world = rank, world
        self.owners = owners or {}
        self.device = device or torch.device("cpu")  # where small control tensors live (NCCL: this rank's GPU)

    @classmethod
    def single(cls) -> "Ranks":
        return cls()

    @classmethod
    def current(cls, groups: Sequence[Sequence[Tuple[str, float]]] = ()) -> "Ranks":
        """The initialized default process group, or one process without one."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return cls.single()
        world = dist.get_world_size()
        device = torch.device("cpu")
        if dist.get_backend() == "nccl":
            device = torch.device("cuda", torch.cuda.current_device())
        return cls(dist.get_rank(), world, assign_owners(groups, world), device)

    @property
    def leader(self) -> bool:
        return self.rank == 0

    def owns(self, name: str) -> bool:
        return self.world == 1 or self.owners[name] == self.rank

    def all_sum(self, t: torch.Tensor) -> torch.Tensor:
        """t summed over the ranks (in place; returned for convenience)."""
        if self.world > 1:
            moved = t.to(self.device)
            dist.all_reduce(moved)
            t.copy_(moved)
        return t

    def all_true(self, flag: bool) -> bool:
        return int(self.all_sum(torch.tensor([int(not flag)], dtype=torch.int64))) == 0

    @contextmanager
    def agree(self, stage: str) -> Iterator[None]:
        """Runs local code; afterwards every rank learns whether any rank
        raised. The failing rank re-raises its error, the others RankFailed."""
        error: Optional[BaseException] = None
        try:
            yield
        except Exception as e:  # noqa: BLE001  (re-raised below, on every rank)
            if self.world == 1:
                raise
            error = e
        if self.world == 1:
            return
        flags = torch.zeros(self.world, dtype=torch.int64)
        flags[self.rank] = int(error is not None)
        failed = self.all_sum(flags).nonzero().flatten().tolist()
        if not failed:
            return
        messages: List[Optional[str]] = [None] * self.world
        dist.all_gather_object(messages, None if error is None else f"{type(error).__name__}: {error}")
        if error is not None:
            raise error
        raise RankFailed(f"rank {failed[0]} failed during {stage}: {messages[failed[0]]}")

    def reduce_hessians(self, accs: Dict[str, HessianAccumulator]) -> Dict[str, Optional[torch.Tensor]]:
        """{name: fp32 Hessian over every rank's tokens} on the owner, None on
        the other ranks; consumes the accumulators. The owner adds the other
        ranks' compensated sums one at a time, in rank order, so the result is
        the one a single process gets. Raises if a layer saw no token on any rank."""
        counts = self.all_sum(torch.tensor([a.count for a in accs.values()], dtype=torch.int64))
        for (name, a), n in zip(accs.items(), counts.tolist()):
            if n == 0:
                raise ValueError(f"target layer {name!r} never ran on the calibration data")
        out = {}
        for (name, a), n in zip(accs.items(), counts.tolist()):
            owner = self.owners[name] if self.world > 1 else self.rank
            if self.rank != owner:
                dist.send(a.hi, dst=owner)
                dist.send(a.lo, dst=owner)
                a.hi = a.lo = None
                out[name] = None
                continue
            if self.world > 1:
                hi, lo = torch.empty_like(a.hi), torch.empty_like(a.lo)
                for src in range(self.world):
                    if src != owner:
                        dist.recv(hi, src=src)
                        dist.recv(lo, src=src)
                        a.merge(hi, lo)
                del hi, lo
                a.count = n  # tokens over all ranks
            out[name] = a.hessian()
        return out

    def reduce_to_owners(self, tensors: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Sums each tensor over the ranks into its owner; returns the owned
        ones and drops the others as soon as they are sent."""
        if self.world == 1:
            return tensors
        owned = {}
        for name in list(tensors):
            t = tensors.pop(name)
            dist.reduce(t, dst=self.owners[name])
            if self.owns(name):
                owned[name] = t
        return owned

    def share(self, names: Sequence[str], local: Dict[str, Dict[str, torch.Tensor]]
              ) -> Dict[str, Dict[str, torch.Tensor]]:
        """{name: {key: tensor}} for every name on every rank, each broadcast
        from its owner, whose `local` holds it."""
        if self.world == 1:
            return local
        metas: List[Optional[dict]] = [None] * self.world
        dist.all_gather_object(metas, {n: {k: (tuple(t.shape), t.dtype) for k, t in d.items()}
                                       for n, d in local.items()})
        meta = {n: m for part in metas for n, m in part.items()}
        out = {}
        for name in names:
            owner, tensors = self.owners[name], {}
            for key, (shape, dtype) in meta[name].items():
                wire = torch.uint8 if dtype == torch.bool else dtype
                if owner == self.rank:
                    t = local[name][key].to(wire).contiguous()
                else:
                    t = torch.empty(shape, dtype=wire, device=self.device)
                dist.broadcast(t, src=owner)
                tensors[key] = t.to(dtype)
            out[name] = tensors
        return out


@contextmanager
def process_group_from_env(device: torch.device, timeout_s: float) -> Iterator[torch.device]:
    """Under torchrun (WORLD_SIZE > 1 in the environment): initializes the
    default process group, gloo on CPU or NCCL on CUDA, with `timeout_s` for
    every collective, and yields this rank's device (cuda -> cuda:LOCAL_RANK);
    destroys the group at the end. Otherwise yields `device` unchanged."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        yield device
        return
    if timeout_s <= 0:
        raise ValueError(f"--dist-timeout must be positive, got {timeout_s}")
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) if device.index is None
                              else device.index)
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                            timeout=datetime.timedelta(seconds=timeout_s))
    try:
        yield device
    finally:
        dist.destroy_process_group()
