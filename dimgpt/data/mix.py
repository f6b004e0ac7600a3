"""The fine-tuning conversation mix of DimensionGPT, as configuration, and the loader that draws it.

Training conversations are drawn group by group at set ratios (DimensionGPT: human-written 9.9 %,
chatbot-written 90 %, self-identity 0.1 %); each one gets a system preprompt from a pool with
probability `preprompt_ratio`. Validation runs over the held-out conversations, in a fixed order,
all with the same preprompt, and counts the loss on answer tokens only.

A group is the `group` label the instruction store keeps for each conversation (`SourceConfig.group`,
or the source name when empty).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from dimgpt.config import InstructMix
from dimgpt.data.instruct import ANSWER, PADDING_MARK, PROMPT, insert_preprompt, open_instruct_source
from dimgpt.data.loader import StepLoader
from dimgpt.data.store import StoreError, checked_ids, read_json
from dimgpt.data.tokenizer import PADDING, Tokenizer
from dimgpt.errors import NotFoundError
from dimgpt.presets import INSTRUCT_RESOURCES

RESOURCES = INSTRUCT_RESOURCES


# --- the loader -------------------------------------------------------------------------------------


class MixLoader(StepLoader):
	"""Fine-tuning batches of the instruction store of a dataset folder, drawn as `mix` says.

	Training (`training=True`): each row starts at the beginning of a conversation and is filled with
	whole conversations (the last one cut at the end of the row), each drawn by group ratio, then
	uniformly within its group, with a random preprompt at `mix.preprompt_ratio`. Batch `step` comes
	from its own generator seeded by (seed, rank, world_size, step), so the state is one number, and
	batches are prefetched (`StepLoader`).
	Validation (`training=False`): one held-out conversation per row, in a fixed shuffled order, each
	once (rows past the end are empty), with `mix.validation_preprompt`, padded; instruction tokens
	weigh 0.

	Loss weight of a target token: 1.0 in an answer (including the token that closes it),
	`instruction_weight` on instruction tokens in training and 0 in validation, 0 on padding.
	"""

	def __init__(
		self,
		dataset_dir: str | Path,
		split: str,
		batch_size: int,
		context_length: int,
		mix: InstructMix,
		*,
		seed: int = 0,
		rank: int = 0,
		world_size: int = 1,
		training: bool | None = None,
		instruction_weight: float = 0.1,
		prefetch: int = 4,
	) -> None:
		super().__init__(
			split, batch_size, context_length, seed=seed, rank=rank, world_size=world_size, prefetch=prefetch
		)
		dataset_dir = Path(dataset_dir)
		self.mix = mix
		self.training = split == "train" if training is None else training
		self.weight_table = np.zeros(256, dtype=np.float32)
		self.weight_table[ANSWER] = 1.0
		self.weight_table[PROMPT] = instruction_weight if self.training else 0.0
		self.weight_table[PADDING_MARK] = 0.0

		manifest_path = dataset_dir / "data.json"
		if not manifest_path.is_file():
			raise NotFoundError(
				f"{manifest_path} not found: run `.venv/bin/python -m dimgpt create-data --out {dataset_dir}` first"
			)
		dataset = read_json(manifest_path)
		names = list(dataset.get("instruct", {}))
		if not names:
			raise StoreError(
				f"{manifest_path} lists no instruction data: give create-data instruction sources (`--instruct PATH.jsonl`)"
			)
		# every conversation of the split: (source, index) pairs, and its group label
		self.stores = []
		refs, labels = [], []
		for s, name in enumerate(names):
			source_manifest, shard, marks, groups = open_instruct_source(dataset_dir / "instruct" / name, split)
			self.stores.append((shard, marks))
			refs += [(s, i) for i in range(shard.documents)]
			labels += [source_manifest["groups"][g] for g in groups.tolist()]
		self.refs = np.array(refs, dtype=np.int64).reshape(-1, 2)
		labels = np.array(labels, dtype=object)
		self.ratios = mix.ratios(set(labels.tolist()))
		self.group_names = list(self.ratios)
		self.group_probabilities = np.array([self.ratios[g] for g in self.group_names])
		self.members = [np.flatnonzero(labels == g) for g in self.group_names]
		tokenizer = Tokenizer.load(dataset_dir / "vocab.txt")
		self.vocab_size = tokenizer.vocab_size
		encode = lambda text: np.array(tokenizer.encode(text), dtype=np.int64)  # noqa: E731
		self.preprompts = [encode(p) for p in mix.preprompts]
		self.validation_preprompt = encode(mix.validation_preprompt) if mix.validation_preprompt else None
		# validation order: the held-out conversations of the mix's groups, shuffled once
		order = np.concatenate(self.members) if self.members else np.zeros(0, np.int64)
		self.order = np.random.default_rng(seed).permutation(np.sort(order))
		if not self.training and len(self.order) == 0:
			raise StoreError(f"{dataset_dir}: no held-out conversation in the groups {self.group_names}")

	@property
	def num_conversations(self) -> int:
		return int(sum(len(m) for m in self.members))

	def conversation(self, index: int, preprompt: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
		"""Tokens and role marks of conversation `index`, with `preprompt` (token ids) inserted."""
		s, i = self.refs[index]
		shard, marks = self.stores[s]
		start, end = int(shard.offsets[i]), int(shard.offsets[i + 1])
		tokens = np.asarray(checked_ids(shard, start, end, self.vocab_size), dtype=np.int64)
		marks = np.asarray(marks[start:end])
		if preprompt is not None:
			tokens, marks = insert_preprompt(tokens, marks, preprompt)
		return tokens, marks

	def draw(self, rng: np.random.Generator) -> tuple[str, int, int | None]:
		"""(group, conversation index, preprompt index or None) of one training conversation."""
		g = int(rng.choice(len(self.group_names), p=self.group_probabilities))
		index = int(self.members[g][rng.integers(len(self.members[g]))])
		use = self.preprompts and rng.random() < self.mix.preprompt_ratio
		return self.group_names[g], index, int(rng.integers(len(self.preprompts))) if use else None

	def make_batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
		"""Window tokens [B, T+1] and target weights [B, T] of batch `step` (a pure function of it)."""
		size = self.context_length + 1
		tokens = np.full((self.batch_size, size), PADDING, dtype=np.int64)
		marks = np.full((self.batch_size, size), PADDING_MARK, dtype=np.uint8)
		rng = np.random.default_rng([self.seed, self.rank, self.world_size, step])
		for row in range(self.batch_size):
			if self.training:
				n = 0
				while n < size:
					_, index, p = self.draw(rng)
					n = self._put(tokens[row], marks[row], n, *self.conversation(index, self._preprompt(p)))
			else:
				k = (step * self.world_size + self.rank) * self.batch_size + row
				if k < len(self.order):
					self._put(
						tokens[row], marks[row], 0, *self.conversation(int(self.order[k]), self.validation_preprompt)
					)
		return tokens, self.weight_table[marks[:, 1:]]

	def _preprompt(self, p: int | None) -> np.ndarray | None:
		return None if p is None else self.preprompts[p]

	@staticmethod
	def _put(row: np.ndarray, row_marks: np.ndarray, n: int, tokens: np.ndarray, marks: np.ndarray) -> int:
		length = min(len(tokens), len(row) - n)
		row[n : n + length], row_marks[n : n + length] = tokens[:length], marks[:length]
		return n + length


def mix_loaders(
	dataset_dir: str | Path,
	batch_size: int,
	context_length: int,
	mix: InstructMix,
	*,
	seed: int = 0,
	instruction_weight: float = 0.1,
) -> Callable[[str, Any], MixLoader]:
	"""A `make_loader(split, env)` for `dimgpt.training.trainer.train` that draws `mix`."""

	def make(split: str, env: Any = None) -> MixLoader:
		rank, world_size = (env.rank, env.world_size) if env is not None else (0, 1)
		return MixLoader(
			dataset_dir,
			split,
			batch_size,
			context_length,
			mix,
			seed=seed,
			rank=rank,
			world_size=world_size,
			training=split == "train",
			instruction_weight=instruction_weight,
		)

	return make
