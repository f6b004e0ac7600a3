"""Learning-rate schedule: linear warmup, cosine decay to the minimum, then flat."""

from __future__ import annotations

import itertools
import math

import pytest

from dimgpt.config import TrainConfig
from dimgpt.presets import get_preset
from dimgpt.training.schedule import learning_rate

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
