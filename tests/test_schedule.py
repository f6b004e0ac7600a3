"""Learning-rate schedules: linear warmup, then cosine decay or warmup-stable-decay to the minimum, then flat."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import pytest

from dimgpt.config import TrainConfig
from dimgpt.presets import get_preset
from dimgpt.training.schedule import decay_start, learning_rate, lr_factor, timed_decay

RECIPE = get_preset("dimensiongpt-0.2b").train  # 6e-4 -> 6e-5, 2,000 warmup, decay over 100,000 steps


def test_warmup_is_linear_up_to_the_peak() -> None:
	assert learning_rate(0, RECIPE) == pytest.approx(6e-4 / 2_000)
	assert learning_rate(999, RECIPE) == pytest.approx(3e-4)
	assert learning_rate(1_999, RECIPE) == pytest.approx(6e-4)
	warmup = [learning_rate(s, RECIPE) for s in range(2_000)]
	assert all(a < b for a, b in itertools.pairwise(warmup))


def test_cosine_decay_to_the_minimum() -> None:
	assert learning_rate(2_000, RECIPE) == pytest.approx(6e-4)
	middle = 2_000 + (100_000 - 2_000) // 2
	assert learning_rate(middle, RECIPE) == pytest.approx((6e-4 + 6e-5) / 2)
	quarter = 2_000 + (100_000 - 2_000) // 4
	assert learning_rate(quarter, RECIPE) == pytest.approx(6e-5 + (6e-4 - 6e-5) * (1 + math.cos(math.pi / 4)) / 2)
	decay = [learning_rate(s, RECIPE) for s in range(2_000, 100_001, 97)]
	assert all(a >= b for a, b in itertools.pairwise(decay))
	assert learning_rate(100_000, RECIPE) == pytest.approx(6e-5)
	assert learning_rate(250_000, RECIPE) == 6e-5


def test_no_warmup() -> None:
	config = TrainConfig(lr=1.0, min_lr=0.0, warmup_steps=0, decay_steps=10)
	assert learning_rate(0, config) == pytest.approx(1.0)
	assert learning_rate(5, config) == pytest.approx(0.5)
	assert learning_rate(10, config) == 0.0


WSD = TrainConfig(lr=1e-3, min_lr=1e-4, warmup_steps=10, decay_steps=100, schedule="wsd", cooldown_steps=20)


def test_wsd_warms_up_holds_then_decays_linearly_over_the_cooldown() -> None:
	assert learning_rate(0, WSD) == pytest.approx(1e-4)
	assert learning_rate(9, WSD) == pytest.approx(1e-3)
	assert [learning_rate(s, WSD) for s in range(10, 81)] == [1e-3] * 71  # stable: exactly the peak
	assert learning_rate(85, WSD) == pytest.approx(1e-3 - 5 / 20 * 9e-4)
	assert learning_rate(90, WSD) == pytest.approx((1e-3 + 1e-4) / 2)
	assert learning_rate(99, WSD) == pytest.approx(1e-4 + 1 / 20 * 9e-4)
	assert learning_rate(100, WSD) == learning_rate(500, WSD) == 1e-4
	decay = [learning_rate(s, WSD) for s in range(80, 101)]
	assert all(a > b for a, b in itertools.pairwise(decay))
	assert lr_factor(90, WSD) == pytest.approx(0.55) and lr_factor(50, WSD) == 1.0


def test_wsd_default_cooldown_is_the_last_fifth_and_never_eats_the_warmup() -> None:
	config = replace(WSD, cooldown_steps=0)
	assert decay_start(config) == 80
	assert decay_start(replace(config, warmup_steps=95)) == 95


def test_decaying_a_stable_checkpoint_later_changes_nothing_before_it() -> None:
	"""A run extended from 100 to 300 steps (or decayed from step 150) had the same rates so far."""
	extended = replace(WSD, decay_steps=300, cooldown_steps=20)
	assert [learning_rate(s, extended) for s in range(80)] == [learning_rate(s, WSD) for s in range(80)]
	decayed = replace(WSD, decay_steps=170, cooldown_steps=20)  # a checkpoint at 150, decayed over 20 steps
	assert learning_rate(149, decayed) == 1e-3 and learning_rate(160, decayed) == pytest.approx(5.5e-4)


def test_unknown_schedule_or_optimizer_is_refused() -> None:
	with pytest.raises(ValueError, match="schedule must be one of cosine, wsd"):
		TrainConfig(schedule="linear")
	with pytest.raises(ValueError, match="optimizer must be one of adamw, muon"):
		TrainConfig(optimizer="sgd")


def test_a_timed_decay_lasts_a_quarter_of_the_steps_done() -> None:
	config = timed_decay(replace(WSD, decay_steps=10_000), 400)
	assert (config.decay_steps, config.cooldown_steps) == (500, 100)
	assert learning_rate(399, config) == 1e-3 and learning_rate(450, config) == pytest.approx(5.5e-4)
	assert learning_rate(500, config) == 1e-4
	assert timed_decay(WSD, 1).cooldown_steps == 1
