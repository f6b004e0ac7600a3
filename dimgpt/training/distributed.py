"""Process-group set-up for `torchrun` (DistributedDataParallel): NCCL on GPU, gloo on CPU.

Run alone, every helper here degrades to the single-process case.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from dimgpt.device import pick_device


@dataclass(frozen=True)
class Distributed:
	"""Where this process sits: its rank among `world_size` and the device it drives."""

	rank: int = 0
	local_rank: int = 0
	world_size: int = 1
	device: torch.device = field(default_factory=lambda: torch.device("cpu"))

	@property
	def enabled(self) -> bool:
		return self.world_size > 1

	@property
	def is_main(self) -> bool:
		"""Rank 0 alone logs, plots and saves."""
		return self.rank == 0


def setup_distributed(device: str | torch.device | None = None) -> Distributed:
	"""Join the process group `torchrun` describes in the environment (WORLD_SIZE, RANK, LOCAL_RANK)."""
	world_size = int(os.environ.get("WORLD_SIZE", "1"))
	device = pick_device(device)
	if world_size == 1:
		return Distributed(device=device)
	rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
	if device.type == "cuda":
		device = torch.device("cuda", local_rank)
		torch.cuda.set_device(device)
	if not dist.is_initialized():
		dist.init_process_group(
			backend="nccl" if device.type == "cuda" else "gloo", device_id=device if device.type == "cuda" else None
		)
	return Distributed(rank=rank, local_rank=local_rank, world_size=world_size, device=device)


def cleanup_distributed() -> None:
	if dist.is_initialized():
		dist.destroy_process_group()


def all_reduce(tensor: torch.Tensor, env: Distributed, op: str = "sum") -> torch.Tensor:
	"""Sum (or max) `tensor` over all ranks, in place; a no-op alone."""
	if env.enabled:
		dist.all_reduce(tensor, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
	return tensor


def gather_objects(obj: Any, env: Distributed) -> list[Any]:
	"""Every rank's `obj`, in rank order (loader positions and RNG states for the checkpoint)."""
	if not env.enabled:
		return [obj]
	out: list[Any] = [None] * env.world_size
	dist.all_gather_object(out, obj)
	return out


def barrier(env: Distributed) -> None:
	if env.enabled:
		dist.barrier()
