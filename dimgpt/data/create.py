"""The create-data job: sources -> tokenizer -> sharded token store, plus instruction data, on every core.

Stages (each resumes where an interrupted run stopped):
1. sample (only when vocab.txt is absent): `tokenizer_chars` characters drawn across sources in
   proportion to size x multiplier, from randomly chosen pieces of each source (about 4x the source's
   quota is read, not the whole source), streamed to `tokenizer_sample.txt`.
2. vocab: the tokenizer trained on the sample, saved as `vocab.txt`.
3. encode: each source is cut into pieces (`sources.pieces`); worker processes read, filter
   (`quality`), sign (exact hash, MinHash) and encode one piece each, all cores busy and each source
   read once. The main process takes the pieces' results in stream order, drops exact and near
   duplicates (one index across all sources), sends each document to its split (by its hash) and writes
   the shards; whenever a shard fills, every split's open shard is completed and `progress.json`
   records the stream position (piece, record) and the counts, from which a killed run resumes.
   At most `2 x workers + 2` pieces are in flight, so memory does not grow with the corpus; the
   deduplication index (`dedup`: Bloom filters in a few index processes) is sized once, from the sources'
   sizes (1.9 GB at the release's 52M documents).
4. instruct: the instruction conversations, formatted and stored (`instruct`).
Then `data.json` holds the DataConfig and the summary.

Many machines: `--shard I/N` encodes the I-th of N contiguous slices of every source's pieces into
`OUT/parts/I-of-N` (with the vocabulary of `OUT`); one run's stream of a source is part 0's slice, then
part 1's, and so on. Each part deduplicates within itself and records its stream (`stream.rec`: each
record's fate and characters, piece by piece). `merge_data` (dimgpt/data/merge.py) then replays the
parts in one run's order through a new index (the same `dedup` code, the signatures kept beside the
shards and in `dropped.sig`), so duplicates across parts are dropped as one run drops them, and writes
`OUT`'s manifests pointing at the parts' shards (no token is copied) with the documents one run drops
listed per shard (`dropped`), which the readers skip, and one run's counts. This module owns the
records' formats (STREAM, the fates, `dropped.sig`); the merge reads them through it.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import sys
import time
import zlib
from collections import Counter, deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from dimgpt.config import DataConfig, QualityConfig, SourceConfig, to_dict
from dimgpt.data import quality
from dimgpt.data.dedup import EXACT, NEAR, Deduplicator, estimate_capacity, index_processes
from dimgpt.data.instruct import build_instruct_source
from dimgpt.data.sources import Piece, document_hash, local_files, pieces, read_piece, read_records
from dimgpt.data.store import (
	FORMAT_VERSION,
	SPLITS,
	DataMismatchError,
	ShardWriter,
	StoreError,
	check_fingerprint,
	complete_shards,
	read_json,
	shard_stem,
	token_dtype,
	write_json,
)
from dimgpt.data.tokenizer import END_OF_TEXT, START_OF_TEXT, Tokenizer
from dimgpt.errors import NotFoundError, UsageError
from dimgpt.presets import SOURCE_LISTS, get_preset, get_sources

EXAMPLES = 3  # dropped documents kept per rule and source, for the summary and the notebook
EXAMPLE_CHARS = 400
# worker stages (CPU seconds summed over the workers) and main-process stages (wall seconds)
WORKER_STAGES = ("read", "filter", "sign", "encode")
MAIN_STAGES = ("sampling", "vocab training", "waiting", "dedup", "writing", "instruct")


class _Timer:
	"""Seconds spent per stage."""

	def __init__(self, stages: Sequence[str]) -> None:
		self.seconds = dict.fromkeys(stages, 0.0)

	def __call__(self, stage: str) -> _Span:
		return _Span(self.seconds, stage)


class _Span:
	def __init__(self, seconds: dict[str, float], stage: str) -> None:
		self.seconds, self.stage = seconds, stage

	def __enter__(self) -> None:
		self.start = time.perf_counter()

	def __exit__(self, *_: object) -> None:
		self.seconds[self.stage] += time.perf_counter() - self.start


def parse_shard(spec: str | None) -> tuple[int, int]:
	"""(I, N) from "I/N" (0 <= I < N); (0, 1) for None."""
	if spec is None:
		return 0, 1
	index, sep, count = spec.partition("/")
	try:
		i, n = int(index), int(count)
	except ValueError:
		i, n = -1, 0
	if not sep or not 0 <= i < n:
		raise UsageError(f"--shard {spec!r}: give I/N with 0 <= I < N, e.g. 0/8 for the first of 8 machines")
	return i, n


def part_dir(out_dir: str | Path, shard: tuple[int, int]) -> Path:
	"""Where part I of N of the dataset `out_dir` is written."""
	return Path(out_dir) / "parts" / f"{shard[0]}-of-{shard[1]}"


def create_data(
	config: DataConfig,
	out_dir: str | Path,
	*,
	shard: tuple[int, int] = (0, 1),
	vocab_only: bool = False,
	force_tokenizer: bool = False,
	progress: bool = True,
	on_shard: Callable[[dict[str, Any]], None] | None = None,
	cache_dir: str | Path | None = None,
) -> dict[str, Any]:
	"""Build (or finish building) the dataset folder `out_dir`; return its summary (also in data.json).

	shard: (I, N) encodes only the I-th of N slices of every source, into `part_dir(out_dir, shard)`,
	with `out_dir/vocab.txt` (made first by a run with vocab_only=True); `merge_data` joins the parts.
	on_shard: called with each shard manifest once the shard is complete on disk.
	cache_dir: datasets' cache for hub sources (default: the Hugging Face cache in your home); hub
	sources are streamed, so it holds only small metadata.
	"""
	for source in (*config.sources, *config.instruct_sources):
		if source.kind == "files":
			local_files(source)  # a missing file fails now, before anything is written
	root = Path(out_dir)
	root.mkdir(parents=True, exist_ok=True)
	timer = _Timer(MAIN_STAGES)
	trained = force_tokenizer or not (root / "vocab.txt").exists()
	if shard[1] > 1 and trained:
		raise NotFoundError(
			f"{root / 'vocab.txt'} is missing: the parts of a dataset share one vocabulary; make it first with "
			f"`create-data --out {root} --vocab-only` (same sources and preset), then run the parts"
		)
	tokenizer = train_tokenizer(
		config, root, force=force_tokenizer, progress=progress, cache_dir=cache_dir, timer=timer
	)
	if vocab_only:
		return {"vocab_size": tokenizer.vocab_size, "tokenizer_fingerprint": tokenizer.fingerprint}
	out = part_dir(root, shard) if shard[1] > 1 else root
	start = time.perf_counter()
	pretrain, work = _encode(config, out, tokenizer, shard, progress, on_shard, cache_dir, timer)
	instruct = {}
	if shard[0] == 0:  # conversations are few: the first part stores them, the merge takes them from it
		with timer("instruct"):
			for source in config.instruct_sources:
				cache = out / ".hf_cache" if source.kind == "files" else cache_dir  # local files leave only locks
				instruct[source.name] = _instruct_source(config, source, out, tokenizer, cache, progress)
	summary = {
		"format_version": FORMAT_VERSION,
		"vocab_size": tokenizer.vocab_size,
		"tokenizer_fingerprint": tokenizer.fingerprint,
		"tokenizer_trained": trained,
		"tokenizer_sample": read_json(root / "tokenizer_sample.json")
		if (root / "tokenizer_sample.json").exists()
		else {},
		"shard": list(shard),
		"pretrain": with_shares(pretrain),
		"instruct": instruct,
		"times": {**timer.seconds, "encode_wall": time.perf_counter() - start - timer.seconds["instruct"]},
		"work": work,
	}
	write_json(out / "data.json", {**summary, "config": to_dict(config)})
	if progress:
		print_summary(summary)
	return summary


def with_shares(pretrain: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
	"""Each source's share of the training mix: its training tokens x multiplier, normalised."""
	weights = {name: s["splits"]["train"]["tokens"] * s["multiplier"] for name, s in pretrain.items()}
	total = sum(weights.values()) or 1.0
	return {name: {**s, "share": weights[name] / total} for name, s in pretrain.items()}


# --- 1-2. tokenizer sample and vocabulary ---------------------------------------------------------


def source_sizes(config: DataConfig, cache_dir: str | Path | None = None) -> dict[str, int]:
	"""Bytes of each source: its files' sizes on disk, or its characters when unknown (hub, embedded)."""
	sizes = {}
	for source in config.sources:
		listed = pieces(source, config.piece_bytes, cache_dir=cache_dir)
		size = sum(p.size for p in listed)
		if size == 0:  # the hub gives no sizes to a stream: count them (only when training a vocabulary)
			size = sum(len(t) for p in listed for t in read_piece(source, p, cache_dir=cache_dir))
		sizes[source.name] = size
	return sizes


def sample_quotas(config: DataConfig, sizes: dict[str, int]) -> dict[str, float]:
	"""Characters to draw from each source: `tokenizer_chars` split by size x multiplier."""
	weights = {s.name: sizes[s.name] * s.multiplier for s in config.sources}
	total = sum(weights.values())
	if total <= 0:
		raise StoreError("every source has a zero multiplier or no text: nothing to train a tokenizer on")
	return {name: config.tokenizer_chars * w / total for name, w in weights.items()}


def _source_seed(config: DataConfig, name: str) -> list[int]:
	return [config.seed, zlib.crc32(name.encode())]


def _sample(config: DataConfig, out: Path, cache_dir: str | Path | None, progress: bool) -> Path:
	"""Paragraphs of kept documents, from each source's pieces in a random order, until its quota.

	A paragraph is taken with probability max(1.25 quota / size, 1/4), so about 4x the quota is read
	(1.25: sizes are bytes on disk, more than the characters of the documents the filters keep)."""
	path = out / "tokenizer_sample.txt"
	sizes = source_sizes(config, cache_dir)
	quotas = sample_quotas(config, sizes)
	sampled = {}
	with open(path.with_name(path.name + ".tmp"), "w", encoding="utf-8") as f:
		for source in config.sources:
			quota = quotas[source.name]
			probability = min(1.0, max(1.25 * quota / max(sizes[source.name], 1), 0.25))
			rng = np.random.default_rng(_source_seed(config, source.name))
			listed = pieces(source, config.piece_bytes, cache_dir=cache_dir)
			taken = 0
			bar = tqdm(
				total=int(quota), desc=f"sample {source.name}", unit="char", unit_scale=True, disable=not progress
			)
			for k in rng.permutation(len(listed)):
				for text in read_piece(source, listed[k], cache_dir=cache_dir):
					text = text.strip()
					if len(text) < config.min_document_chars or (
						source.filter and quality.rejection(text, config.quality) is not None
					):
						continue
					paragraphs = text.split("\n")
					draws = rng.random(len(paragraphs))
					chosen = [p for p, d in zip(paragraphs, draws) if d < probability and p.strip()]
					if chosen:
						f.write("\n".join(chosen) + "\n")
						size = sum(len(p) for p in chosen)
						taken += size
						bar.update(size)
					if taken >= quota:
						break
				if taken >= quota:
					break
			bar.close()
			sampled[source.name] = taken
	os.replace(path.with_name(path.name + ".tmp"), path)
	write_json(out / "tokenizer_sample.json", {"sizes": sizes, "quotas": quotas, "characters": sampled})
	return path


def train_tokenizer(
	config: DataConfig,
	out_dir: str | Path,
	*,
	force: bool = False,
	progress: bool = True,
	cache_dir: str | Path | None = None,
	timer: _Timer | None = None,
) -> Tokenizer:
	"""The tokenizer of `out_dir/vocab.txt`, trained on a sample of the sources first if absent (or forced)."""
	out = Path(out_dir)
	out.mkdir(parents=True, exist_ok=True)
	timer = timer or _Timer(MAIN_STAGES)
	vocab_path = out / "vocab.txt"
	if force or not vocab_path.exists():
		with timer("sampling"):
			sample_path = _sample(config, out, cache_dir, progress)
		with timer("vocab training"):
			tokenizer = Tokenizer.train(
				_lines(sample_path),
				config.vocab_size,
				max_token_length=config.max_token_length,
				forced_tokens=config.forced_tokens,
				progress=progress,
			)
			tokenizer.save(vocab_path.with_name("vocab.txt.tmp"))
			os.replace(vocab_path.with_name("vocab.txt.tmp"), vocab_path)
	return Tokenizer.load(vocab_path)


def _lines(path: Path):
	with open(path, encoding="utf-8") as f:
		for line in f:
			yield line.rstrip("\n")


# --- 3. encoding: the workers ---------------------------------------------------------------------

_WORKER: dict[str, Any] = {}


def _init_worker(config: DataConfig, vocab: list[str], trie: Any, cache_dir: str | Path | None) -> None:
	tokenizer = Tokenizer(vocab, compiled=trie is not None)
	tokenizer._trie = trie  # compiled once in the main process (inherited as is under fork)
	_WORKER.update(config=config, tokenizer=tokenizer, cache_dir=cache_dir)


# a record's fate, as the worker saw it; the main process decides duplicates
KEPT, SHORT = 0, 1
OUTCOMES = ("kept", "short", *quality.RULES)

# `SOURCE/stream.rec`: one row per record read, in stream order, with a row PIECE_END after each piece; what
# merge-data replays to decide duplicates across parts as one run would. fate: where the document went (TRAIN,
# VALIDATION: the next document of that split's shards; INDEXED: not stored, its signature the next row of
# dropped.sig; COPY: an exact copy, nothing stored) or FILTERED + its outcome - 1 (under min_document_chars, or
# the quality rule that dropped it); characters: the document's, once stripped (0 when filtered).
STREAM = np.dtype([("fate", "u1"), ("characters", "<u4")])
TRAIN, VALIDATION, INDEXED, COPY, FILTERED = 0, 1, 2, 3, 4
PIECE_END = 255


def _work(job: tuple[int, Piece, int, str]) -> dict[str, Any]:
	"""Read, filter, sign and encode one piece (from record `skip` on) in a worker process.

	Stage times are this process's CPU seconds: what each stage costs, whatever else runs on the machine."""
	source_index, piece, skip, dtype = job
	began = time.monotonic()  # system-wide on Linux: the main process compares the workers' spans
	config: DataConfig = _WORKER["config"]
	tokenizer: Tokenizer = _WORKER["tokenizer"]
	source = config.sources[source_index]
	seconds = dict.fromkeys(WORKER_STAGES, 0.0)
	clock = time.process_time()
	texts = list(read_piece(source, piece, skip=skip, cache_dir=_WORKER["cache_dir"]))
	seconds["read"] = time.process_time() - clock
	outcomes = np.zeros(len(texts), dtype=np.int8)
	kept: list[str] = []
	examples: dict[str, list[str]] = {}
	near = config.quality.near_duplicates
	minhashes: list[np.ndarray] = []
	# A kept document is signed right after its rules, from the same word split (`quality.Document`); the two
	# stages' CPU seconds are added up apart.
	clock = time.process_time
	for r, text in enumerate(texts):
		start = clock()
		text = text.strip()
		rule = "short" if len(text) < config.min_document_chars else None
		document = quality.Document(text) if rule is None and (source.filter or near) else None
		if rule is None and source.filter:
			rule = quality.rejection(document, config.quality)
		filtered = clock()
		seconds["filter"] += filtered - start
		if rule is None:
			kept.append(text)
			if near:
				minhashes.append(quality.minhash(document, config.quality.dedup_permutations).hashvalues)
				seconds["sign"] += clock() - filtered
			continue
		outcomes[r] = OUTCOMES.index(rule)
		if rule != "short" and len(examples.setdefault(rule, [])) < EXAMPLES:
			examples[rule].append(text[:EXAMPLE_CHARS])
	start = clock()
	hashes = np.array([document_hash(t) for t in kept], dtype=np.uint64)
	signatures = np.empty((len(kept), signature_width(config)), dtype=np.uint32)
	signatures[:, 0], signatures[:, 1] = hashes & np.uint64(0xFFFFFFFF), hashes >> np.uint64(32)
	if near and kept:
		signatures[:, 2:] = minhashes
	seconds["sign"] += clock() - start
	start = clock()
	encoded = tokenizer.encode_batch(kept, workers=1)
	lengths = np.array([len(ids) + 2 for ids in encoded], dtype=np.int64)
	offsets = np.zeros(len(kept) + 1, dtype=np.int64)
	np.cumsum(lengths, out=offsets[1:])
	tokens = np.empty(int(offsets[-1]), dtype=dtype)
	for ids, a, b in zip(encoded, offsets[:-1], offsets[1:]):
		tokens[a], tokens[a + 1 : b - 1], tokens[b - 1] = START_OF_TEXT, ids, END_OF_TEXT
	seconds["encode"] = clock() - start
	return {
		"outcomes": outcomes,
		"tokens": tokens,
		"offsets": offsets,
		"characters": np.array([len(t) for t in kept], dtype=np.int64),
		"signatures": signatures,
		"examples": examples,
		"seconds": seconds,
		"bytes": sum(len(t.encode("utf-8")) for t in texts),
		"span": (os.getpid(), began, time.monotonic()),
	}


def worker_count(config: DataConfig) -> int:
	"""Worker processes: `encode_workers`, or the cores this process may use."""
	return config.encode_workers or (
		len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
	)


def _pool(config: DataConfig, tokenizer: Tokenizer, cache_dir: str | Path | None, cores: int) -> Any:
	method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
	trie = tokenizer._compiled_trie() if tokenizer.compiled else None
	args = (config, tokenizer.vocab, trie, cache_dir)
	return mp.get_context(method).Pool(cores, initializer=_init_worker, initargs=args)


# --- 3. encoding: the main process ----------------------------------------------------------------


def held_out(document_hash: int, fraction: float) -> bool:
	"""Whether a document goes to validation: its hash, read as a number in [0, 1), is under `fraction`.

	A property of the document alone: the same wherever and in whatever order it is processed."""
	return (document_hash >> 11) * 2.0**-53 < fraction


def kept_split(signature: np.ndarray, counts: Counter, config: DataConfig, first_part: bool) -> str:
	"""The split of a kept document (its signature, whose first two columns are its 64-bit hash) of a source
	whose kept documents so far are `counts` ("documents", "validation"): held out by its hash, or, in the part
	that reads the source from its start (`first_part`), every second document while the source has fewer than
	`min_validation_documents` in validation (a small source still gets some)."""
	document_hash = int(signature[0]) | int(signature[1]) << 32
	forced = first_part and counts["documents"] % 2 == 1 and counts["validation"] < config.min_validation_documents
	return "validation" if held_out(document_hash, config.validation_fraction) or forced else "train"


class _SourceRun:
	"""The main process's side of one source: split, dedup, shards, progress and counts."""

	def __init__(
		self,
		config: DataConfig,
		source: SourceConfig,
		directory: Path,
		tokenizer: Tokenizer,
		settings: dict[str, Any],
		first_part: bool,
		dedup: Deduplicator,
		on_shard: Callable | None,
		pieces: int,
	) -> None:
		self.config, self.source, self.directory, self.settings = config, source, directory, settings
		self.decode, self.pieces = tokenizer.decode, pieces
		self.first_part, self.dedup = first_part, dedup
		self.dtype = token_dtype(tokenizer.vocab_size)
		self.meta = {"source": source.name, "tokenizer_fingerprint": tokenizer.fingerprint, "settings": settings}
		self.progress_path = directory / "progress.json"
		# signatures of the documents the index holds that no shard stores (near duplicates; after max_chars,
		# the rest of the last piece): appended at each sync, re-entered into the index on resume
		self.dropped_path = directory / "dropped.sig"
		self.dropped: list[np.ndarray] = []
		self.stream_path = directory / "stream.rec"
		self.stream: list[tuple[int, int]] = []  # rows of stream.rec since the last sync
		state = self._resume(tokenizer.fingerprint)
		self.position: list[int] = state["position"]
		self.counts: dict[str, int] = state["counts"]
		self.examples: dict[str, list[str]] = state["examples"]
		self.writers = {
			split: ShardWriter(
				directory,
				split,
				dtype=self.dtype,
				shard_tokens=config.shard_tokens,
				meta=self.meta,
				start_index=state["shards"][split],
				first_document=state["documents"][split],
				on_shard=on_shard,
			)
			for split in SPLITS
		}

	def _resume(self, fingerprint: str) -> dict[str, Any]:
		"""The state after the last complete shards of an earlier run (kept shards re-enter the dedup index)."""
		fresh = {
			"position": [0, 0],
			"shards": dict.fromkeys(SPLITS, 0),
			"documents": dict.fromkeys(SPLITS, 0),
			"counts": Counter(),
			"examples": {},
			"dropped": 0,
			"stream": 0,
		}
		state = read_json(self.progress_path) if self.progress_path.exists() else None
		if state is not None and state.get("piece_bytes") != self.config.piece_bytes:
			print(
				f"{self.progress_path}: other piece_bytes, the position means nothing: encoding again", file=sys.stderr
			)
			state = None  # complete_shards(limit 0) below deletes its shards
		if state is not None and state.get("settings") != self.settings:
			raise DataMismatchError(
				f"{self.progress_path} was made with other settings: delete {self.directory} (or choose another "
				"output folder) to encode it again"
			)
		self.directory.mkdir(parents=True, exist_ok=True)
		limits = state["shards"] if state else dict.fromkeys(SPLITS, 0)
		done = {
			split: complete_shards(self.directory, split, fingerprint, self.settings, limits[split]) for split in SPLITS
		}
		if state is None or any(len(done[split]) < limits[split] for split in SPLITS):
			if state is not None:  # a shard the progress counts on is damaged: this source starts again
				print(f"{self.directory}: a completed shard is damaged: encoding this source again", file=sys.stderr)
				for split in SPLITS:
					complete_shards(self.directory, split, fingerprint, self.settings, 0)
			self.dropped_path.unlink(missing_ok=True)
			self.stream_path.unlink(missing_ok=True)
			return fresh
		for split in SPLITS:
			for manifest in done[split]:
				self.dedup.remember(_signatures(shard_stem(self.directory, split, manifest["index"])))
		self.dedup.remember(read_dropped(self.dropped_path, self.config, rows=state.get("dropped", 0), truncate=True))
		if self.stream_path.exists():  # rows after the last sync are read again
			os.truncate(
				self.stream_path, min(self.stream_path.stat().st_size, state.get("stream", 0) * STREAM.itemsize)
			)
		return {**state, "counts": Counter(state["counts"])}

	def take(self, piece_index: int, skip: int, result: dict[str, Any], timer: _Timer) -> bool:
		"""Add one piece's result (from record `skip` on); False once the source's `max_chars` is reached."""
		outcomes, offsets, signatures = result["outcomes"], result["offsets"], result["signatures"]
		for rule, texts in result["examples"].items():
			self.examples.setdefault(rule, []).extend(texts[: EXAMPLES - len(self.examples[rule])])
		with timer("dedup"):
			fates = self.dedup.check(signatures).tolist()  # the whole piece enters the index, in order
		characters = result["characters"].tolist()
		d = 0
		outcomes = outcomes.tolist()
		for r, outcome in enumerate(outcomes):
			if outcome != KEPT:
				self.counts[OUTCOMES[outcome]] += 1
				self.counts["records"] += 1
				self.stream.append((FILTERED + outcome - 1, 0))
				continue
			if fates[d] in (EXACT, NEAR):
				duplicate = "near_duplicates" if fates[d] == NEAR else "duplicates"
				self._not_stored(fates[d], signatures[d], characters[d])
				self.counts[duplicate] += 1
				self.counts["records"] += 1
				self._example(duplicate, result["tokens"][offsets[d] : offsets[d + 1]])
				d += 1
				continue
			split = kept_split(signatures[d], self.counts, self.config, self.first_part)
			tokens = result["tokens"][offsets[d] : offsets[d + 1]]
			with timer("writing"):
				if (
					self.writers[split].open
					and self.writers[split].offsets[-1] + len(tokens) > self.config.shard_tokens
				):
					self.sync([piece_index, skip + r])
				self.writers[split].add(tokens, characters[d], signatures[d])
			self.stream.append((TRAIN if split == "train" else VALIDATION, characters[d]))
			self.counts["records"] += 1  # after the sync above: its position is this record, to be read again
			self.counts["documents"] += 1
			self.counts["characters"] += characters[d]
			self.counts[split] += 1
			d += 1
			if self.source.max_chars and self.counts["characters"] >= self.source.max_chars:
				for outcome in outcomes[r + 1 :]:  # the rest of the piece entered the index, none of it is stored
					if outcome != KEPT:
						self.stream.append((FILTERED + outcome - 1, 0))
						continue
					self._not_stored(fates[d], signatures[d], characters[d])
					d += 1
				self.stream.append((PIECE_END, 0))
				return False
		self.stream.append((PIECE_END, 0))
		return True

	def _not_stored(self, fate: int, signature: np.ndarray, characters: int) -> None:
		"""A document no shard stores: an exact copy (nothing kept), else its signature goes to dropped.sig (the
		index holds it: a near duplicate, or past max_chars)."""
		if fate == EXACT:
			self.stream.append((COPY, characters))
		else:
			self.dropped.append(signature)
			self.stream.append((INDEXED, characters))

	def _example(self, rule: str, tokens: np.ndarray) -> None:
		if len(self.examples.setdefault(rule, [])) < EXAMPLES:
			self.examples[rule].append(self.decode(tokens[1:-1])[:EXAMPLE_CHARS])

	def sync(self, position: list[int]) -> None:
		"""Complete every split's open shard, then record the stream position they stop at."""
		for writer in self.writers.values():
			writer.finish()
		if self.dropped:
			with open(self.dropped_path, "ab") as f:
				f.write(np.stack(self.dropped).astype(np.uint32).tobytes())
			self.dropped = []
		if self.stream:
			with open(self.stream_path, "ab") as f:
				f.write(np.array(self.stream, dtype=STREAM).tobytes())
			self.stream = []
		self.position = position
		write_json(
			self.progress_path,
			{
				"settings": self.settings,
				"piece_bytes": self.config.piece_bytes,  # the position counts pieces of this size
				"position": position,
				"shards": {split: w.index for split, w in self.writers.items()},
				"documents": {split: w.first_document for split, w in self.writers.items()},
				"counts": dict(self.counts),
				"examples": self.examples,
				"dropped": dropped_rows(self.dropped_path, self.config),
				"stream": stream_rows(self.stream_path),
			},
		)

	def finish(self) -> dict[str, Any]:
		"""Complete the last shards and write the source manifest (its presence: the source is done)."""
		self.sync([self.pieces, 0])
		splits = {}
		for split in SPLITS:
			shards = [read_json(p) for p in sorted(self.directory.glob(f"{split}_*.json"))]
			splits[split] = {
				"shards": len(shards),
				"documents": sum(m["documents"] for m in shards),
				"tokens": sum(m["tokens"] for m in shards),
				"characters": sum(m.get("characters", 0) for m in shards),
			}
		counts = self.counts
		manifest = {
			**self.meta,
			"format_version": FORMAT_VERSION,
			"multiplier": self.source.multiplier,
			"dtype": self.dtype.name,
			"documents": counts["documents"],
			"characters": counts["characters"],
			"records": counts["records"],
			"short": counts["short"],
			"duplicates": counts["duplicates"],
			"near_duplicates": counts["near_duplicates"],
			"filtered": {rule: counts[rule] for rule in quality.RULES},
			"dropped_examples": self.examples,
			"splits": splits,
		}
		write_json(self.directory / "source.json", manifest)
		return manifest


def _signatures(stem: Path) -> np.ndarray:
	path = stem.with_suffix(".sig.npy")
	return np.load(path, allow_pickle=False) if path.exists() else np.zeros((0, 2), dtype=np.uint32)


def signature_width(config: DataConfig) -> int:
	return 2 + (config.quality.dedup_permutations if config.quality.near_duplicates else 0)


def dropped_rows(path: Path, config: DataConfig) -> int:
	return path.stat().st_size // (4 * signature_width(config)) if path.exists() else 0


def stream_rows(path: Path) -> int:
	return path.stat().st_size // STREAM.itemsize if path.exists() else 0


def read_dropped(
	path: Path, config: DataConfig, rows: int | None = None, truncate: bool = False, start: int = 0
) -> np.ndarray:
	"""`rows` signatures (default: all) of a `dropped.sig` file from row `start` (cut to the first `rows` with
	`truncate`: what a killed run appended after its last sync is encoded again)."""
	width = signature_width(config)
	rows = dropped_rows(path, config) if rows is None else rows
	if truncate and path.exists():
		os.truncate(path, rows * 4 * width)
	if not rows:
		return np.zeros((0, width), dtype=np.uint32)
	return np.fromfile(path, dtype=np.uint32, count=rows * width, offset=start * width * 4).reshape(rows, width)


def _settings(config: DataConfig, source: SourceConfig, shard: tuple[int, int]) -> dict[str, Any]:
	"""What the shards of a source depend on: a resumed run must have the same."""
	return {
		"source": to_dict(source),
		"shard_tokens": config.shard_tokens,
		"min_document_chars": config.min_document_chars,
		"validation_fraction": config.validation_fraction,
		"min_validation_documents": config.min_validation_documents,
		"quality": to_dict(config.quality) if source.filter else {"near_duplicates": config.quality.near_duplicates},
		"shard": list(shard),
	}


def _my_pieces(listed: list[Piece], shard: tuple[int, int]) -> range:
	"""The indices of the pieces part I of N encodes: the I-th of N contiguous runs."""
	i, n = shard
	return range(len(listed) * i // n, len(listed) * (i + 1) // n)


def _encode(
	config: DataConfig,
	out: Path,
	tokenizer: Tokenizer,
	shard: tuple[int, int],
	progress: bool,
	on_shard: Callable | None,
	cache_dir: str | Path | None,
	timer: _Timer,
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
	"""Every source through the workers, in order; (source manifests, work done per stage)."""
	encode_start = time.perf_counter()
	listed_all = [pieces(source, config.piece_bytes, cache_dir=cache_dir) for source in config.sources]
	sizes = [sum(listed[k].size for k in _my_pieces(listed, shard)) for listed in listed_all]
	cores = worker_count(config)
	capacity = estimate_capacity(config.quality, sizes, shard[1])
	dedup = Deduplicator(config.quality, capacity, processes=index_processes(cores))
	with dedup:
		manifests: dict[str, dict[str, Any]] = {}
		runs: dict[str, _SourceRun] = {}
		jobs = []  # (source, piece index, piece, first record), in stream order, for every unfinished source
		last: dict[int, int] = {}  # each source's last piece to encode
		total_bytes = 0
		for index, source in enumerate(config.sources):
			directory = out / "pretrain" / source.name
			settings = _settings(config, source, shard)
			earlier = _earlier_manifest(directory, settings, tokenizer)
			if earlier is not None:  # finished by an earlier run: its documents still count as seen
				for split in SPLITS:
					for i in range(earlier["splits"][split]["shards"]):
						dedup.remember(_signatures(shard_stem(directory, split, i)))
				dedup.remember(read_dropped(directory / "dropped.sig", config))
				manifests[source.name] = earlier
				continue
			if (directory / "source.json").exists():
				raise DataMismatchError(
					f"{directory / 'source.json'} was made with other settings: delete {directory} (or choose another "
					"output folder)"
				)
			listed = listed_all[index]
			first = _my_pieces(listed, shard).start == 0  # this part reads the source from its start
			run = _SourceRun(config, source, directory, tokenizer, settings, first, dedup, on_shard, len(listed))
			runs[source.name] = run
			piece, record = run.position
			for k in _my_pieces(listed, shard):
				if k >= piece:
					jobs.append((index, k, listed[k], record if k == piece else 0))
					total_bytes += listed[k].size
					last[index] = k
		work = {
			"bytes": 0,
			"workers": 0,
			**{f"{s}_s": 0.0 for s in WORKER_STAGES},
			"dedup_capacity": capacity,
			"start_s": 0.0,
			"worker_span_s": 0.0,
		}
		if not runs:
			return manifests, {**work, "dedup_documents": dedup.seen}
		dtype = token_dtype(tokenizer.vocab_size).name
		pool = _pool(config, tokenizer, cache_dir, cores)
		work["workers"] = cores
		# Start-up (a fixed cost: imports, the tokenizer's trie and kernel, forking), then each worker's span from
		# its first piece's start to its last one's end: the workers' CPU seconds over their spans is how well
		# they use their cores while they run, whatever the start-up and the corpus size.
		work["start_s"] = time.perf_counter() - encode_start
		spans: dict[int, list[float]] = {}
		bar = tqdm(total=total_bytes or None, unit="B", unit_scale=True, disable=not progress)
		pending: deque = deque()
		stopped: set[int] = set()  # sources whose max_chars was reached
		queue = iter(jobs)
		try:
			# a bounded window (memory stays flat whatever the corpus size), two pieces a worker: results are taken
			# in stream order, and a slow piece must not leave the other workers idle
			for _ in range(2 * cores + 2):
				_submit(pool, queue, pending, dtype, stopped)
			current = None
			while pending:
				(index, k, piece, skip), result = pending.popleft()
				with timer("waiting"):
					result = result.get()
				_submit(pool, queue, pending, dtype, stopped)
				source = config.sources[index]
				run = runs[source.name]
				if current != source.name:
					bar.set_description(f"encode {source.name}")
					current = source.name
				work["bytes"] += result["bytes"]
				pid, began, ended = result["span"]
				span = spans.setdefault(pid, [began, ended])
				span[0], span[1] = min(span[0], began), max(span[1], ended)
				for stage, seconds in result["seconds"].items():
					work[f"{stage}_s"] += seconds
				bar.update(piece.size)
				if index in stopped:
					continue
				if not run.take(k, skip, result, timer):
					stopped.add(index)
				if k == last[index] or index in stopped:
					with timer("writing"):
						manifests[source.name] = run.finish()
					if manifests[source.name]["documents"] == 0 and shard[1] == 1:
						raise StoreError(
							f"source {source.name!r} has no document kept ({run.counts['records']} read, "
							f"{run.counts['short']} under {config.min_document_chars} characters, filtered: "
							f"{dict((r, run.counts[r]) for r in quality.RULES if run.counts[r])}): check its path and "
							"text column, or its `filter` switch"
						)
			work["worker_span_s"] = sum(b - a for a, b in spans.values())
			for name, run in runs.items():  # a slice with no piece of a source (more parts than pieces)
				if name not in manifests:
					manifests[name] = run.finish()
		finally:
			bar.close()
			pool.terminate()
		ordered = {s.name: manifests[s.name] for s in config.sources}
	if dedup.overfull():
		print(f"warning: {dedup.overfull()}", file=sys.stderr)
	return ordered, {**work, "dedup_documents": dedup.seen}


def _submit(pool: Any, queue: Any, pending: deque, dtype: str, stopped: set[int]) -> None:
	"""Hand the next job to the workers (none of a source whose max_chars is reached)."""
	for job in queue:
		index, _, piece, skip = job
		if index not in stopped:
			pending.append((job, pool.apply_async(_work, ((index, piece, skip, dtype),))))
			return


def _earlier_manifest(directory: Path, settings: dict[str, Any], tokenizer: Tokenizer) -> dict[str, Any] | None:
	"""The manifest a finished earlier run left in `directory` with these settings, else None.

	Raises when that run used another tokenizer (its token ids would mean other text)."""
	path = directory / "source.json"
	if not path.exists():
		return None
	manifest = read_json(path)
	check_fingerprint(manifest, path, tokenizer.fingerprint)
	return manifest if manifest.get("settings") == settings else None


# --- 5. instruction data ---------------------------------------------------------------------------


def _instruct_source(
	config: DataConfig, source: SourceConfig, out: Path, tokenizer: Tokenizer, cache: Path | None, progress: bool
) -> dict[str, Any]:
	directory = out / "instruct" / source.name
	settings = {
		"source": to_dict(source),
		"validation_fraction": config.instruct_validation_fraction,
		"min_validation_documents": config.min_validation_documents,
	}
	earlier = _earlier_manifest(directory, settings, tokenizer)
	if earlier is not None:
		return earlier  # instruction stores are small: other settings simply rebuild them
	records = tqdm(
		read_records(source, cache_dir=cache), desc=f"instruct {source.name}", unit="conv", disable=not progress
	)
	manifest = build_instruct_source(
		directory,
		records,
		tokenizer,
		meta={
			"source": source.name,
			"tokenizer_fingerprint": tokenizer.fingerprint,
			"settings": settings,
			"multiplier": source.multiplier,
		},
		group=source.group or source.name,
		validation_fraction=config.instruct_validation_fraction,
		min_validation=config.min_validation_documents,
	)
	if progress and manifest["malformed"]:
		skipped = sum(manifest["malformed"].values())
		print(f"{source.name}: skipped {skipped} malformed conversation(s): {manifest['malformed']}")
	return manifest


# --- summary ---------------------------------------------------------------------------------------


def summary_rows(summary: dict[str, Any]) -> list[list[Any]]:
	"""One row per pretraining source: documents kept and dropped, characters, tokens, share of the mix."""
	rows = []
	for name, s in summary["pretrain"].items():
		tokens = sum(v["tokens"] for v in s["splits"].values())
		rows.append(
			[
				name,
				f"{s['documents']:,}",
				f"{s['duplicates']:,}",
				f"{s['near_duplicates']:,}",
				f"{sum(s['filtered'].values()):,}",
				f"{s['characters']:,}",
				f"{tokens:,}",
				f"{s['characters'] / max(tokens, 1):.2f}",
				f"{100 * s['share']:.1f} %",
			]
		)
	return rows


SUMMARY_HEADER = (
	"source",
	"documents",
	"duplicates",
	"near dup.",
	"filtered",
	"characters",
	"tokens",
	"chars/token",
	"share",
)


def print_summary(summary: dict[str, Any]) -> None:
	"""Print the per-source table, what each filter dropped, and the instruction counts."""
	rows = summary_rows(summary)
	widths = [max(len(h), *(len(str(r[i])) for r in rows)) for i, h in enumerate(SUMMARY_HEADER)]
	print(f"\nvocab: {summary['vocab_size']:,} tokens (fingerprint {summary['tokenizer_fingerprint']})")
	print("  ".join(h.rjust(w) for h, w in zip(SUMMARY_HEADER, widths)))
	for row in rows:
		print("  ".join(str(c).rjust(w) for c, w in zip(row, widths)))
	dropped = Counter()
	for s in summary["pretrain"].values():
		dropped.update(s["filtered"])
	if sum(dropped.values()):
		print("filtered by rule: " + ", ".join(f"{rule} {n:,}" for rule, n in dropped.items() if n))
	for name, s in summary["instruct"].items():
		counts = {k: v["conversations"] for k, v in s["splits"].items()}
		print(f"instruct {name}: {counts} conversations, malformed skipped: {sum(s['malformed'].values())}")


# --- command line ----------------------------------------------------------------------------------


def source_from_spec(spec: str) -> SourceConfig:
	"""A source from `[NAME=]PATH[@MULTIPLIER]`; PATH `hf:DATASET_ID[/CONFIG]` names a hub dataset."""
	name, sep, rest = spec.partition("=")
	if not sep or "/" in name or "*" in name:
		name, rest = "", spec
	path, sep, multiplier = rest.rpartition("@")
	if not sep:
		path, multiplier = rest, "1"
	try:
		weight = float(multiplier)
	except ValueError:
		raise UsageError(f"source {spec!r}: multiplier {multiplier!r} is not a number") from None
	if path.startswith("hf:"):
		dataset, _, config = path[3:].partition(":")
		default = dataset.strip("/").replace("/", "-")  # a hub id (owner/name) or a local folder
		return SourceConfig(name or default, kind="hf", path=dataset, hf_config=config or None, multiplier=weight)
	stem = Path(path.split(",")[0]).name.split(".")[0].replace("*", "all") or "files"
	return SourceConfig(name or stem, kind="files", path=path, multiplier=weight)


def resolve_config(
	preset: str = "tiny",
	sources: Sequence[str] = (),
	instruct: Sequence[str] | None = None,
	**overrides: Any,
) -> DataConfig:
	"""The preset's DataConfig with its sources replaced: a named list (`SOURCE_LISTS`) or file/hub specs."""
	config = get_preset(preset).data
	changes: dict[str, Any] = {k: v for k, v in overrides.items() if v is not None and k != "quality"}
	if overrides.get("quality"):
		changes["quality"] = dataclasses.replace(config.quality, **overrides["quality"])
	if len(sources) == 1 and sources[0] in SOURCE_LISTS:
		changes["sources"], changes["instruct_sources"] = get_sources(sources[0])
	elif sources:
		changes["sources"] = tuple(source_from_spec(s) for s in sources)
	if instruct is not None:
		changes["instruct_sources"] = tuple(source_from_spec(s) for s in instruct)
	return dataclasses.replace(config, **changes)


def quality_overrides(items: Sequence[str]) -> dict[str, Any]:
	"""QualityConfig fields from `FIELD=VALUE` items (true/false, numbers)."""
	fields = {f.name: f.type for f in dataclasses.fields(QualityConfig)}
	out: dict[str, Any] = {}
	for item in items:
		name, _, value = item.partition("=")
		if name not in fields:
			raise UsageError(f"--quality {item}: no such switch; choose among {', '.join(fields)}")
		if value.lower() in ("true", "false", "on", "off"):
			out[name] = value.lower() in ("true", "on")
		else:
			try:
				out[name] = int(value) if value.isdigit() else float(value)
			except ValueError:
				raise UsageError(f"--quality {item}: {value!r} is not true/false or a number") from None
	return out


def run_cli(args: Any) -> int:
	"""`python -m dimgpt create-data` (errors a user can fix are `dimgpt.errors.UserError`s)."""
	config = resolve_config(
		args.preset,
		args.sources or (),
		args.instruct,
		vocab_size=args.vocab_size,
		tokenizer_chars=args.tokenizer_chars,
		shard_tokens=args.shard_tokens,
		encode_workers=args.workers,
		quality=quality_overrides(args.quality),
	)
	out = args.out or f"data/{args.preset}"
	shard = parse_shard(args.shard)
	create_data(
		config,
		out,
		shard=shard,
		vocab_only=args.vocab_only,
		force_tokenizer=args.force_tokenizer,
		progress=not args.no_progress,
	)
	if args.vocab_only:
		print(f"vocabulary written to {Path(out) / 'vocab.txt'}")
	elif shard[1] > 1:
		print(
			f"part {shard[0]} of {shard[1]} written to {part_dir(out, shard)}; once all are done: "
			f".venv/bin/python -m dimgpt merge-data {out}"
		)
	else:
		print(f"dataset written to {out}")
	return 0
