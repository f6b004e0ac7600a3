"""Optimizers: DimensionGPT's AdamW, or Muon for the hidden matrices with AdamW for the rest.

`TrainConfig.optimizer` picks one:
- "adamw" (the release's recipe): AdamW on everything, weight decay on matrices only.
- "muon": `torch.optim.Muon` on the 2-D weights inside the blocks (attention query/key/value/
  projection, feed-forward linear_1/2/3), AdamW on the embedding (tied to the output layer) and on
  the norms' gains. Muon orthogonalises each matrix's momentum (Newton-Schulz), so every direction
  of a hidden matrix moves at the same rate; the embedding is a lookup table (rows are touched one
  token at a time) and the gains are vectors, which Muon does not suit.

Every param group keeps its peak rate in `base_lr`; the schedule gives a factor in [0, 1] that
`set_lr` applies to all groups, so Muon's and AdamW's rates warm up and decay together. When a
checkpoint is loaded, the state (moments, momentum buffers) comes from the file and the rates and
weight decays from the config, so a run resumed with a changed recipe takes the new values.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from dimgpt.config import TrainConfig

# hyper-parameters that come from the config, never from a checkpoint's param groups
_CONFIGURED = ("base_lr", "weight_decay", "momentum", "betas", "eps", "ns_steps")


class Optimizers:
	"""Several optimizers stepped as one: what the trainer and GradScaler see of Muon + AdamW.

	GradScaler only needs `param_groups` and `step` (its unscale and inf checks run over the groups
	of all optimizers); the checkpoint holds one state dict per optimizer, by name.
	"""

	def __init__(self, **optimizers: torch.optim.Optimizer) -> None:
		self.optimizers = optimizers

	@property
	def param_groups(self) -> list[dict[str, Any]]:
		return [g for o in self.optimizers.values() for g in o.param_groups]

	def step(self) -> None:
		for optimizer in self.optimizers.values():
			optimizer.step()

	def zero_grad(self, set_to_none: bool = True) -> None:
		for optimizer in self.optimizers.values():
			optimizer.zero_grad(set_to_none=set_to_none)

	def state_dict(self) -> dict[str, Any]:
		return {name: o.state_dict() for name, o in self.optimizers.items()}

	def load_state_dict(self, state: dict[str, Any]) -> None:
		if set(state) != set(self.optimizers):
			raise ValueError(f"optimizer state holds {sorted(state)}, this recipe needs {sorted(self.optimizers)}")
		for name, optimizer in self.optimizers.items():
			optimizer.load_state_dict(state[name])


Optimizer = torch.optim.Optimizer | Optimizers


def hidden_matrices(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
	"""(the 2-D weights inside the blocks, every other trainable parameter) of a Transformer."""
	hidden, rest = [], []
	# named_parameters lists a shared tensor once, so the tied embedding / output weight is one entry.
	for name, p in model.named_parameters():
		if p.requires_grad:
			(hidden if p.dim() == 2 and name.startswith("blocks.") else rest).append(p)
	return hidden, rest


def make_optimizer(model: nn.Module, config: TrainConfig, device: torch.device) -> Optimizer:
	"""The optimizer of `config.optimizer` over `model`'s trainable parameters."""
	if config.optimizer == "adamw":
		return _adamw([p for p in model.parameters() if p.requires_grad], config, device)
	hidden, rest = hidden_matrices(model)
	muon = torch.optim.Muon(
		hidden,
		lr=config.muon_lr,
		weight_decay=config.muon_weight_decay,
		momentum=config.muon_momentum,
		nesterov=True,
		ns_steps=config.muon_ns_steps,
	)
	for group in muon.param_groups:
		group["base_lr"] = config.muon_lr
	return Optimizers(muon=muon, adamw=_adamw(rest, config, device))


def _adamw(params: list[nn.Parameter], config: TrainConfig, device: torch.device) -> torch.optim.AdamW:
	"""AdamW with weight decay on matrices (≥2-D) only; norms' gains are not decayed."""
	groups = [
		{"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay, "base_lr": config.lr},
		{"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0, "base_lr": config.lr},
	]
	# The fused kernel (CUDA and CPU) updates every tensor in one pass: about 10x faster than the
	# per-op path on this project's CPU (76M parameters: 0.04 s against 0.35-0.47 s a step).
	fused = True if device.type in ("cuda", "cpu") else None
	return torch.optim.AdamW(groups, lr=config.lr, betas=(config.beta1, config.beta2), eps=config.eps, fused=fused)


def set_lr(optimizer: Optimizer, factor: float) -> None:
	"""Every group's rate becomes its peak rate times `factor` (the schedule's value for this step)."""
	for group in optimizer.param_groups:
		group["lr"] = group["base_lr"] * factor


def load_optimizer_state(optimizer: Optimizer, state: dict[str, Any]) -> None:
	"""Restore a checkpoint's optimizer state, keeping the rates and decays `optimizer` was built with.

	`load_state_dict` would also bring back the saved param groups' hyper-parameters: a run resumed
	with a new learning rate or weight decay must use the new ones (checkpoints written before
	`base_lr` existed have none).
	"""
	configured = [{k: g[k] for k in _CONFIGURED if k in g} for g in optimizer.param_groups]
	optimizer.load_state_dict(state)
	for group, values in zip(optimizer.param_groups, configured):
		group.update(values)
