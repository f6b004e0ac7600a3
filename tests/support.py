"""Helpers shared by test modules (a module of its own: test modules never import one another).

Fixtures are in conftest.py; this holds plain objects and functions: small configs and a loader that
replays given batches.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from dimgpt.config import ModelConfig
from dimgpt.data.loader import PretrainLoader
from dimgpt.presets import get_preset

ROOT = Path(__file__).resolve().parents[1]

# A model small enough that a step takes milliseconds, over the tiny preset's vocabulary.
SMALL = ModelConfig(vocab_size=4_096, context_length=32, window=16, dim=64, n_layers=2, n_heads=4, n_kv_heads=2)
# The tiny recipe cut down to a few steps, no validation and no periodic checkpoint, with DimensionGPT's
# AdamW and cosine (the tiny preset's Muon and WSD are tested in test_optim.py).
QUICK = replace(
	get_preset("tiny").train,
	optimizer="adamw",
	schedule="cosine",
	batch_size=4,
	warmup_steps=2,
	decay_steps=20,
	max_steps=4,
	eval_every=0,
	eval_batches=0,
	checkpoint_every=0,
	log_every=1,
)


def small_config(**changes: object) -> ModelConfig:
	"""SMALL with some fields changed (vocab_size, context_length, ...): the one factory of the tests' small
	models. The feed-forward size follows `dim`, as in ModelConfig, unless `hidden_dim` is given."""
	return replace(SMALL, **{"hidden_dim": 0, **changes})


class ListLoader:
	"""Replays given batches in order (state: the position), for tests that shape the batches."""

	def __init__(self, batches: list) -> None:
		self.batches, self.position = batches, 0

	def next_batch(self):
		batch = self.batches[self.position % len(self.batches)]
		self.position += 1
		return batch

	def state_dict(self) -> dict:
		return {"position": self.position}

	def load_state_dict(self, state: dict) -> None:
		self.position = state["position"]


def real_batches(dataset: Path, n: int, batch_size: int, seed: int = 1) -> list:
	"""`n` pretraining batches of `dataset` for SMALL's context, materialised."""
	loader = PretrainLoader(dataset, "train", batch_size, SMALL.context_length, seed=seed)
	try:
		return [tuple(t.clone() for t in loader.next_batch()) for _ in range(n)]
	finally:
		loader.close()
