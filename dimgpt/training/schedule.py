"""Learning-rate schedule: linear warmup, then cosine decay to the minimum rate."""

from __future__ import annotations

import math

from dimgpt.config import TrainConfig


def learning_rate(step: int, config: TrainConfig) -> float:
	"""Rate of optimizer update `step` (0-based).

	Rises linearly to `lr` over the first `warmup_steps` updates, follows half a cosine down to
	`min_lr` at `decay_steps`, then stays at `min_lr`.
	"""
	if step < config.warmup_steps:
		return config.lr * (step + 1) / config.warmup_steps
	if step >= config.decay_steps:
		return config.min_lr
	progress = (step - config.warmup_steps) / (config.decay_steps - config.warmup_steps)
	return config.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (config.lr - config.min_lr)
