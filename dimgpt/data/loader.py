"""Training-side loaders: batches of token windows with per-token loss weights, prefetched off the training thread.

Batch number `step` is drawn from its own random generator, seeded by (seed, rank, world_size, step): the
loader state is just the number of the next batch, batches do not depend on how many were prefetched, and
ranks draw different data. Prefetching runs `prefetch` batches ahead in a background thread.

Pretraining window (DimensionGPT): pick a source with probability size × multiplier (its training
tokens, for both splits), a random token of it, read on to the end of that document, then append
whole random documents (source re-drawn each time) until `context_length + 1` tokens. Every target
weighs 1 (a window is always full). Conversations for fine-tuning are drawn by `dimgpt.data.mix.MixLoader`.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dimgpt.data.store import SPLITS, Shard, StoreError, checked_ids, field, open_source, read_json
from dimgpt.errors import NotFoundError


@dataclass
class _Source:
	"""The shards of one source for one split, with cumulative token and document counts across shards.

	Counts and positions are those of the documents read: a merged dataset's dropped documents are skipped
	(`Shard.locate` and `Shard.document` map to the stored tokens)."""

	name: str
	shards: list[Shard]
	weight: float

	def __post_init__(self) -> None:
		self.token_starts = np.cumsum([0] + [s.size for s in self.shards])
		self.doc_starts = np.cumsum([0] + [s.documents for s in self.shards])

	@property
	def tokens(self) -> int:
		return int(self.token_starts[-1])

	@property
	def documents(self) -> int:
		return int(self.doc_starts[-1])

	def locate_token(self, position: int) -> tuple[int, int, int]:
		"""(shard, start, end) of the rest of the document holding global token `position`."""
		k = int(np.searchsorted(self.token_starts, position, side="right")) - 1
		return k, *self.shards[k].locate(position - int(self.token_starts[k]))

	def locate_document(self, index: int) -> tuple[int, int, int]:
		"""(shard, start, end) of document `index`."""
		k = int(np.searchsorted(self.doc_starts, index, side="right")) - 1
		return k, *self.shards[k].document(index - int(self.doc_starts[k]))


class StepLoader:
	"""Batches numbered by step, each a pure function of its number, prefetched in a background thread.

	A subclass gives `make_batch(step)`; this class gives the trainer's loader interface (`next_batch`,
	`state_dict`, `load_state_dict`, `close`), whose state is just the number of the next batch.
	"""

	def __init__(
		self,
		split: str,
		batch_size: int,
		context_length: int,
		*,
		seed: int,
		rank: int,
		world_size: int,
		prefetch: int,
	) -> None:
		if split not in SPLITS:
			raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
		if not 0 <= rank < world_size:
			raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
		self.split, self.batch_size, self.context_length = split, batch_size, context_length
		self.seed, self.rank, self.world_size, self.prefetch = seed, rank, world_size, max(1, prefetch)
		self._step = 0
		self._thread: threading.Thread | None = None
		self._queue: queue.Queue = queue.Queue(maxsize=self.prefetch)
		self._stop = threading.Event()

	def make_batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
		"""Window tokens [B, T+1] and target weights [B, T] of batch `step` (a pure function of the step)."""
		raise NotImplementedError

	# --- the iterator interface the trainer uses --------------------------------------------------

	def next_batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
		"""x [B,T] int64 inputs, y [B,T] int64 targets (x shifted by one), w [B,T] float32 loss weights."""
		if self._thread is None:
			self._start()
		step, batch = self._queue.get()
		if isinstance(batch, BaseException):
			self._thread = None
			raise batch
		assert step == self._step, f"prefetched batch {step} is not the expected {self._step}"
		self._step += 1
		window, weights = batch
		window = torch.from_numpy(window)
		return window[:, :-1], window[:, 1:], torch.from_numpy(weights)

	def state_dict(self) -> dict[str, Any]:
		"""JSON-able position: the number of the next batch `next_batch` returns."""
		return {
			"step": self._step,
			"seed": self.seed,
			"rank": self.rank,
			"world_size": self.world_size,
			"split": self.split,
		}

	def load_state_dict(self, state: dict[str, Any]) -> None:
		"""Continue from `state`: the following batches are those that followed when it was taken."""
		self._halt()
		self._step = int(state["step"])
		self.seed = int(state.get("seed", self.seed))

	def close(self) -> None:
		"""Stop the prefetch thread."""
		self._halt()

	def __del__(self) -> None:
		self._halt()

	def _start(self) -> None:
		self._stop = threading.Event()
		self._queue = queue.Queue(maxsize=self.prefetch)
		self._thread = threading.Thread(target=self._work, args=(self._step, self._stop, self._queue), daemon=True)
		self._thread.start()

	def _work(self, step: int, stop: threading.Event, out: queue.Queue) -> None:
		while not stop.is_set():
			try:
				item: Any = self.make_batch(step)
			except BaseException as error:
				item = error
			while not stop.is_set():
				try:
					out.put((step, item), timeout=0.1)
					break
				except queue.Full:
					continue
			if isinstance(item, BaseException):
				return
			step += 1

	def _halt(self) -> None:
		thread = getattr(self, "_thread", None)
		if thread is not None:
			self._stop.set()
			thread.join()
			self._thread = None


def _dataset_manifest(dataset_dir: Path) -> dict[str, Any]:
	path = Path(dataset_dir) / "data.json"
	if not path.exists():
		raise NotFoundError(f"{path} not found: run `.venv/bin/python -m dimgpt create-data --out {dataset_dir}` first")
	return read_json(path)


class PretrainLoader(StepLoader):
	"""Pretraining batches from the shards of a dataset folder (see `dimgpt.data.store`)."""

	def __init__(
		self,
		dataset_dir: str | Path,
		split: str,
		batch_size: int,
		context_length: int,
		*,
		seed: int = 0,
		rank: int = 0,
		world_size: int = 1,
		prefetch: int = 4,
	) -> None:
		super().__init__(
			split, batch_size, context_length, seed=seed, rank=rank, world_size=world_size, prefetch=prefetch
		)
		dataset_dir = Path(dataset_dir)
		manifest = _dataset_manifest(dataset_dir)
		self.vocab_size = int(field(manifest, dataset_dir / "data.json", "vocab_size"))
		sources = []
		for name in field(manifest, dataset_dir / "data.json", "pretrain"):
			source_manifest, shards = open_source(dataset_dir / "pretrain" / name, split)
			# both splits follow the training mix, so that validation measures the loss on the same mix
			path = dataset_dir / "pretrain" / name / "source.json"
			tokens = field(source_manifest, path, "splits", "train", "tokens")
			sources.append(_Source(name, shards, tokens * float(field(source_manifest, path, "multiplier"))))
		self.sources = [s for s in sources if s.tokens > 0 and s.weight > 0]
		if not self.sources:
			raise StoreError(f"no {split} data with a positive multiplier in this dataset: check create-data's summary")
		weights = np.array([s.weight for s in self.sources], dtype=np.float64)
		self.probabilities = weights / weights.sum()

	def make_batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
		rng = np.random.default_rng([self.seed, self.rank, self.world_size, step])
		tokens = np.empty((self.batch_size, self.context_length + 1), dtype=np.int64)
		first_sources = rng.choice(len(self.sources), size=self.batch_size, p=self.probabilities)
		for row in range(self.batch_size):
			self.fill_row(rng, tokens[row], int(first_sources[row]))
		return tokens, np.ones((self.batch_size, self.context_length), dtype=np.float32)

	def fill_row(self, rng: np.random.Generator, tokens: np.ndarray, first: int) -> None:
		"""A random start in a document of source `first`, then whole random documents."""
		source = self.sources[first]
		k, start, end = source.locate_token(int(rng.integers(source.tokens)))
		n = self._copy(source, k, start, end, tokens, 0)
		while n < len(tokens):
			source = self.sources[int(rng.choice(len(self.sources), p=self.probabilities))]
			k, start, end = source.locate_document(int(rng.integers(source.documents)))
			n = self._copy(source, k, start, end, tokens, n)

	def _copy(self, source: _Source, k: int, start: int, end: int, tokens: np.ndarray, n: int) -> int:
		length = min(end - start, len(tokens) - n)
		tokens[n : n + length] = checked_ids(source.shards[k], start, start + length, self.vocab_size)
		return n + length
