"""merge-data: the parts of a sharded create-data (`OUT/parts/I-of-N`) joined into the dataset `OUT`,
deduplicated as one run (see dimgpt/data/create.py's doc for how the parts record their streams).

Each source's parts are replayed in one run's order (sources in order, each source's parts in order)
through a fresh `Deduplicator`, fed with the signatures kept beside the shards and in `dropped.sig`,
and walked as a run walks its records (counts, split, `max_chars`). No token is copied: the manifests
point at the parts' shards and list, per shard, the documents one run drops (`dropped`), which the
readers skip. Memory stays flat: streams and signatures are read in chunks.
"""

from __future__ import annotations

import os
import shutil
import sys
from array import array
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from dimgpt.config import DataConfig, SourceConfig, from_dict
from dimgpt.data import quality
from dimgpt.data.create import (
	COPY,
	EXAMPLE_CHARS,
	EXAMPLES,
	FILTERED,
	INDEXED,
	KEPT,
	OUTCOMES,
	PIECE_END,
	STREAM,
	TRAIN,
	VALIDATION,
	dropped_rows,
	kept_split,
	print_summary,
	read_dropped,
	signature_width,
	stream_rows,
	with_shares,
	worker_count,
)
from dimgpt.data.dedup import EXACT, Deduplicator, index_processes
from dimgpt.data.store import SPLITS, DataMismatchError, read_json, shard_stem, write_json
from dimgpt.data.tokenizer import Tokenizer
from dimgpt.errors import NotFoundError

CHUNK_ROWS = 1 << 20  # stream rows scanned at once


def merge_data(out_dir: str | Path, *, progress: bool = True) -> dict[str, Any]:
	"""Join the parts `OUT/parts/I-of-N` of a sharded create-data into the dataset `OUT`, deduplicated as one run.

	Each source's `source.json` lists the parts' shards (`files`, relative paths): no token is copied;
	the parts must stay where they are. Duplicates across parts are decided by replaying every part's stream
	(`stream.rec`, the signatures beside the shards and in `dropped.sig`) through a new deduplication index in
	one run's order (sources in order, each source's parts in order): the documents a part kept that one run
	drops go to `dropped` (per split, one list of document numbers per file), which the readers skip, and the
	counts are one run's. The instruction stores (small) are copied from part 0."""
	out = Path(out_dir)
	tokenizer = Tokenizer.load(out / "vocab.txt") if (out / "vocab.txt").exists() else None
	folders = sorted((out / "parts").glob("*-of-*"), key=lambda p: int(p.name.split("-")[0]))
	if tokenizer is None or not folders:
		raise NotFoundError(
			f"{out} holds no vocab.txt or no parts/I-of-N folder: run `create-data --out {out} --shard I/N` first"
		)
	n = int(folders[0].name.rsplit("-", 1)[1])
	names = [f"{i}-of-{n}" for i in range(n)]
	missing = [name for name in names if not (out / "parts" / name / "data.json").exists()]
	if missing or len(folders) != n:
		raise NotFoundError(
			f"{out / 'parts'}: parts {', '.join(missing) or '(extra folders)'} are missing or unfinished (need exactly "
			f"{', '.join(names)}): run `create-data --out {out} --shard I/{n}` for them"
		)
	parts = [read_json(out / "parts" / name / "data.json") for name in names]
	for name, part in zip(names, parts):
		if part["tokenizer_fingerprint"] != tokenizer.fingerprint:
			raise DataMismatchError(
				f"{out / 'parts' / name} was made with another vocabulary than {out / 'vocab.txt'}: make it again"
			)
		if part["config"] != parts[0]["config"]:
			raise DataMismatchError(
				f"{out / 'parts' / name} was made with another configuration than part 0: make it again"
			)
	config = from_dict(DataConfig, parts[0]["config"])
	streams = {
		source.name: [_PartStream(out / "parts" / name / "pretrain" / source.name, config) for name in names]
		for source in config.sources
	}
	indexed = sum(stream.indexed for listed in streams.values() for stream in listed)
	capacity = max(sum(part["work"].get("dedup_capacity", 0) for part in parts), indexed)
	bar = tqdm(
		total=sum(s.length for listed in streams.values() for s in listed),
		unit="rec",
		unit_scale=True,
		disable=not progress,
	)
	pretrain = {}
	with Deduplicator(config.quality, capacity, processes=index_processes(worker_count(config))) as dedup:
		for source in config.sources:
			bar.set_description(f"merge {source.name}")
			directory = out / "pretrain" / source.name
			directory.mkdir(parents=True, exist_ok=True)
			manifests = [part["pretrain"][source.name] for part in parts]
			replay = _Replay(config, source, dedup, tokenizer.decode)
			for stream in streams[source.name]:
				replay.part(stream, bar)
			pretrain[source.name] = replay.manifest(directory, manifests, names, streams[source.name])
			write_json(directory / "source.json", pretrain[source.name])
		bar.close()
		if dedup.overfull():
			print(f"warning: {dedup.overfull()}", file=sys.stderr)
	for source in parts[0]["instruct"]:
		target = out / "instruct" / source
		shutil.rmtree(target, ignore_errors=True)
		shutil.copytree(out / "parts" / names[0] / "instruct" / source, target)
	summary = {
		**{k: parts[0][k] for k in ("format_version", "vocab_size", "tokenizer_fingerprint", "instruct")},
		"tokenizer_trained": False,
		"tokenizer_sample": read_json(out / "tokenizer_sample.json")
		if (out / "tokenizer_sample.json").exists()
		else {},
		"shard": None,
		"parts": names,
		"pretrain": with_shares(pretrain),
		"times": {k: sum(p["times"][k] for p in parts) for k in parts[0]["times"]},
		"work": {k: sum(p["work"].get(k, 0) for p in parts) for k in parts[0]["work"]},
	}
	write_json(out / "data.json", {**summary, "config": parts[0]["config"]})
	if progress:
		print_summary(summary)
	return summary


class _Rows:
	"""The rows of a sequence of signature arrays (memory-mapped), taken in order, a batch at a time."""

	def __init__(self, arrays: Sequence[Callable[[], np.ndarray]], width: int) -> None:
		self.arrays, self.width = list(arrays), width
		self.current = np.zeros((0, width), dtype=np.uint32)
		self.at = 0

	def take(self, count: int) -> np.ndarray:
		out = []
		while count:
			if self.at == len(self.current):
				self.current, self.at = self.arrays.pop(0)(), 0
				continue
			k = min(count, len(self.current) - self.at)
			out.append(self.current[self.at : self.at + k])
			self.at, count = self.at + k, count - k
		return np.concatenate(out) if out else np.zeros((0, self.width), dtype=np.uint32)


class _PartStream:
	"""What one part recorded of one source, for merge-data: its stream (`stream.rec`), its shards, and the
	signatures of the documents it put in its index (kept ones beside the shards, the others in dropped.sig)."""

	def __init__(self, directory: Path, config: DataConfig) -> None:
		self.directory = directory
		manifest = read_json(directory / "source.json")
		path = directory / "stream.rec"
		old = f"{path} is missing or does not match the shards beside it (a part made by an older version, or damaged)"
		again = f"delete {directory} and run that part's create-data again"
		self.path, self.length = path, stream_rows(path)
		self.stems = {
			split: [shard_stem(directory, split, i) for i in range(manifest["splits"][split]["shards"])]
			for split in SPLITS
		}
		# Each shard's manifest, read once: its documents (here and in `locate`), tokens and dtype (`_Replay`).
		self.shards = {split: [read_json(s.with_suffix(".json")) for s in self.stems[split]] for split in SPLITS}
		width = signature_width(config)
		fates = np.zeros(256, dtype=np.int64)
		last = PIECE_END
		for rows in self._chunks():
			fates += np.bincount(rows["fate"], minlength=256)
			last = rows["fate"][-1]
		self.indexed = int(fates[:COPY].sum())  # documents the replay puts in the index (at most)
		dropped = directory / "dropped.sig"
		if (
			fates[TRAIN] != sum(m["documents"] for m in self.shards["train"])
			or fates[VALIDATION] != sum(m["documents"] for m in self.shards["validation"])
			or fates[INDEXED] != dropped_rows(dropped, config)
			or last != PIECE_END
		):
			raise DataMismatchError(f"{old}: {again}")

		def signatures(stem: Path) -> Callable[[], np.ndarray]:
			def load() -> np.ndarray:
				try:
					array = np.load(stem.with_suffix(".sig.npy"), allow_pickle=False)  # one shard's at a time
				except (OSError, ValueError):
					raise DataMismatchError(
						f"{stem.with_suffix('.sig.npy')} is missing or unreadable: {again}"
					) from None
				if array.ndim != 2 or array.shape[1] != width:
					raise DataMismatchError(
						f"{stem.with_suffix('.sig.npy')} holds other signatures than the config's: {again}"
					)
				return array

			return load

		def rows(start: int) -> Callable[[], np.ndarray]:
			count = min(CHUNK_ROWS, int(fates[INDEXED]) - start)
			return lambda: read_dropped(dropped, config, rows=count, start=start)

		self.signatures = {
			TRAIN: _Rows([signatures(s) for s in self.stems["train"]], width),
			VALIDATION: _Rows([signatures(s) for s in self.stems["validation"]], width),
			INDEXED: _Rows([rows(a) for a in range(0, int(fates[INDEXED]), CHUNK_ROWS)], width),
		}

	def _chunks(self) -> Iterator[np.ndarray]:
		"""The stream's rows, CHUNK_ROWS at a time (read, not mapped: memory stays flat whatever the part's size)."""
		for a in range(0, self.length, CHUNK_ROWS):
			yield np.fromfile(
				self.path, dtype=STREAM, count=min(CHUNK_ROWS, self.length - a), offset=a * STREAM.itemsize
			)

	def pieces(self) -> Iterator[np.ndarray]:
		"""The stream's rows piece by piece, without the PIECE_END rows."""
		carry = np.zeros(0, dtype=STREAM)
		for chunk in self._chunks():
			rows = np.concatenate([carry, chunk])
			start = 0
			for end in np.flatnonzero(rows["fate"] == PIECE_END).tolist():
				yield rows[start:end]
				start = end + 1
			carry = rows[start:]

	def locate(self, split: str, index: int) -> tuple[Path, dict[str, Any], int]:
		"""(shard stem, its manifest, document in it) of the part's document `index` of `split` (in stream order)."""
		for stem, shard in zip(self.stems[split], self.shards[split]):
			if index < shard["documents"]:
				return stem, shard, index
			index -= shard["documents"]
		raise IndexError(index)


class _Replay:
	"""One source's documents from every part, in one run's order, through the merge's deduplication index:
	one run's counts, and the documents the parts stored that one run drops."""

	def __init__(self, config: DataConfig, source: SourceConfig, dedup: Deduplicator, decode: Callable) -> None:
		self.config, self.source, self.dedup, self.decode = config, source, dedup, decode
		self.counts: Counter = Counter()  # one run's counts (its splits: "train", "validation")
		self.stored: Counter = Counter()  # documents and characters read, per split where they are stored
		self.drops: list[dict[str, array]] = []  # per part, per split: the part's documents one run drops
		self.examples: list[dict[str, list[str]]] = []  # per part: duplicates across parts, decoded
		self.stopped = False  # the source's max_chars was reached
		self.misplaced = self.lost = 0

	def part(self, stream: _PartStream, bar: Any) -> None:
		"""Replay one part's stream of this source, piece by piece (each piece enters the index whole, as in a run)."""
		drops = {split: array("q") for split in SPLITS}  # 8 bytes a dropped document
		examples: dict[str, list[str]] = {"duplicates": [], "near_duplicates": []}
		self.drops.append(drops)
		self.examples.append(examples)
		position = {TRAIN: 0, VALIDATION: 0}  # the part's next stored document of each split
		for rows in stream.pieces():
			fates, characters = rows["fate"], rows["characters"].tolist()
			bar.update(len(rows) + 1)
			if self.stopped:  # one run read no further: whatever the part stored is dropped
				for code in (TRAIN, VALIDATION):
					stored = int(np.count_nonzero(fates == code))
					drops[SPLITS[code]].extend(range(position[code], position[code] + stored))
					position[code] += stored
				continue
			fed = fates[fates < COPY]
			signatures = np.empty((len(fed), stream.signatures[TRAIN].width), dtype=np.uint32)
			for code in (TRAIN, VALIDATION, INDEXED):
				signatures[fed == code] = stream.signatures[code].take(int(np.count_nonzero(fed == code)))
			verdicts = self.dedup.check(signatures).tolist() if len(fed) else []
			d = 0
			for fate, chars in zip(fates.tolist(), characters):
				where = None
				if fate in (TRAIN, VALIDATION):
					where = (SPLITS[fate], position[fate])
					position[fate] += 1
				if self.stopped:  # the rest of the piece where max_chars was reached
					if where is not None:
						drops[where[0]].append(where[1])
					continue
				self.counts["records"] += 1
				if fate >= FILTERED:
					self.counts[OUTCOMES[fate - FILTERED + 1]] += 1
					continue
				if fate == COPY:  # an exact copy of an earlier document of the same part
					self.counts["duplicates"] += 1
					continue
				verdict = verdicts[d]
				signature = signatures[d]
				d += 1
				if verdict != KEPT or where is None:
					if verdict == KEPT:  # one run keeps it, its part did not store it: see `manifest`
						self.lost += 1
					duplicate = "duplicates" if verdict == EXACT else "near_duplicates"
					self.counts[duplicate] += 1
					if where is not None:
						drops[where[0]].append(where[1])
						if len(examples[duplicate]) < EXAMPLES:
							examples[duplicate].append(self._text(stream, *where))
					continue
				split = kept_split(signature, self.counts, self.config, True)
				self.misplaced += split != where[0]  # stays in the split its part wrote it to (see `manifest`)
				self.counts["documents"] += 1
				self.counts["characters"] += chars
				self.counts[split] += 1
				self.stored[where[0]] += 1
				self.stored[f"{where[0]} characters"] += chars
				if self.source.max_chars and self.counts["characters"] >= self.source.max_chars:
					self.stopped = True

	def _text(self, stream: _PartStream, split: str, index: int) -> str:
		stem, shard, d = stream.locate(split, index)
		offsets = np.load(stem.with_suffix(".idx.npy"), allow_pickle=False)
		data = np.memmap(stem.with_suffix(".bin"), dtype=shard["dtype"], mode="r")
		return self.decode(np.asarray(data[offsets[d] + 1 : offsets[d + 1] - 1]))[:EXAMPLE_CHARS]

	def manifest(
		self, directory: Path, manifests: list[dict[str, Any]], names: list[str], streams: list[_PartStream]
	) -> dict[str, Any]:
		"""The merged source's manifest: the parts' shards, the drop lists, one run's counts."""
		if self.misplaced or self.lost:
			print(
				f"warning: {self.source.name}: {self.misplaced} document(s) are in another split than one run gives "
				f"them and {self.lost} that one run keeps were dropped by their part (its index held documents one run "
				"never reads, past a source's max_chars, or a Bloom filter's false positive): the merged dataset keeps "
				"the parts' choice for these",
				file=sys.stderr,
			)
		files: dict[str, list[str]] = {split: [] for split in SPLITS}
		dropped: dict[str, list[list[int]]] = {split: [] for split in SPLITS}
		splits = {}
		for split in SPLITS:
			tokens = 0
			for stream, drops in zip(streams, self.drops):
				wanted = np.asarray(drops[split], dtype=np.int64)
				first = 0
				for stem, shard in zip(stream.stems[split], stream.shards[split]):
					documents = shard["documents"]
					files[split].append(os.path.relpath(stem, directory))
					mine = (wanted[(wanted >= first) & (wanted < first + documents)] - first).tolist()
					dropped[split].append(mine)
					tokens += shard["tokens"]
					if mine:
						lengths = np.diff(np.load(stem.with_suffix(".idx.npy"), allow_pickle=False))
						tokens -= int(lengths[mine].sum())
					first += documents
			splits[split] = {
				"shards": len(files[split]),
				"documents": self.stored[split],
				"tokens": tokens,
				"characters": self.stored[f"{split} characters"],
			}
		first = manifests[0]
		examples = {
			rule: [t for m in manifests for t in m["dropped_examples"].get(rule, []) if rule in quality.RULES][
				:EXAMPLES
			]
			for rule in {r for m in manifests for r in m["dropped_examples"]}
		}
		for duplicate in ("duplicates", "near_duplicates"):  # the parts' own, then those found across parts
			found = [
				t
				for m, e in zip(manifests, self.examples)
				for t in (*m["dropped_examples"].get(duplicate, []), *e[duplicate])
			]
			if found:
				examples[duplicate] = found[:EXAMPLES]
		return {
			**{k: first[k] for k in ("source", "tokenizer_fingerprint", "format_version", "multiplier", "dtype")},
			"settings": {**first["settings"], "shard": None},
			**{
				k: self.counts[k]
				for k in ("documents", "characters", "records", "short", "duplicates", "near_duplicates")
			},
			"filtered": {rule: self.counts[rule] for rule in quality.RULES},
			"dropped_examples": examples,
			"parts": names,
			"files": files,
			"dropped": dropped,
			"merge": {
				"dropped": sum(len(d[split]) for d in self.drops for split in SPLITS),
				"misplaced": self.misplaced,
				"lost": self.lost,
			},
			"splits": splits,
		}
