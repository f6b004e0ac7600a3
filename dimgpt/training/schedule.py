"""Learning-rate schedules: linear warmup, then cosine decay (the release's) or warmup-stable-decay.

- "cosine": half a cosine from `lr` down to `min_lr` at `decay_steps`, then flat.
- "wsd": `lr` held constant, then a linear decay to `min_lr` over the last `cooldown_steps` before
  `decay_steps`. Until the decay starts the rate does not depend on where the run ends, so a run can
  be extended (raise `decay_steps` and `max_steps` when resuming) and any checkpoint of the stable
  phase decayed into a final model by resuming it with `decay_steps` = its step + the decay's length
  (`python -m dimgpt decay`).

With a time budget (`max_seconds`), a WSD run cannot know its last step in advance: the trainer
starts the decay when 80 % of the time is spent, over a quarter of the steps done so far (so about
the last 20 % of the time, see `timed_decay`), and the run ends when that decay does.

`learning_rate` is the rate of the AdamW groups (the one logged); Muon's groups follow the same
shape from their own peak: every group's rate is its peak times `lr_factor`.
"""

from __future__ import annotations

import math
from dataclasses import replace

from dimgpt.config import TrainConfig

DEFAULT_COOLDOWN = 0.2  # share of decay_steps a WSD decay lasts when cooldown_steps is 0


def decay_start(config: TrainConfig) -> int:
	"""First step of the final WSD decay (never inside the warmup)."""
	cooldown = config.cooldown_steps or round(DEFAULT_COOLDOWN * config.decay_steps)
	return max(config.warmup_steps, config.decay_steps - cooldown)


def learning_rate(step: int, config: TrainConfig) -> float:
	"""Rate of optimizer update `step` (0-based).

	Rises linearly to `lr` over the first `warmup_steps` updates, decays to `min_lr` at
	`decay_steps` (the whole way by a half cosine, or over the last `cooldown_steps` linearly for
	WSD), then stays at `min_lr`.
	"""
	if step < config.warmup_steps:
		return config.lr * (step + 1) / config.warmup_steps
	if step >= config.decay_steps:
		return config.min_lr
	if config.schedule == "wsd":
		start = decay_start(config)
		if step < start:
			return config.lr
		progress = (step - start) / (config.decay_steps - start)
		return config.lr + progress * (config.min_lr - config.lr)
	progress = (step - config.warmup_steps) / (config.decay_steps - config.warmup_steps)
	return config.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (config.lr - config.min_lr)


def lr_factor(step: int, config: TrainConfig) -> float:
	"""The schedule's value at `step` relative to the peak: what every param group's peak is scaled by."""
	return learning_rate(step, config) / config.lr if config.lr > 0 else 0.0


def timed_decay(config: TrainConfig, step: int) -> TrainConfig:
	"""`config` with its WSD decay moved to start at `step`, lasting a quarter of the steps done.

	The decay then takes the same share of the run (DEFAULT_COOLDOWN) as in a run planned in steps.
	"""
	cooldown = max(1, math.ceil(step * DEFAULT_COOLDOWN / (1 - DEFAULT_COOLDOWN)))
	return replace(config, decay_steps=step + cooldown, cooldown_steps=cooldown)
