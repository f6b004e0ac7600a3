"""Token store: memmapped shard files of token ids, plain and inspectable.

Layout of a dataset folder (`create_data` writes it, the loaders read it):

    vocab.txt, data.json                    the tokenizer and the dataset manifest
    pretrain/SOURCE/source.json             per-source manifest (written when the source is complete)
    pretrain/SOURCE/SPLIT_00000.bin         raw token ids, uint16 (uint32 when the vocab exceeds 65,536)
    pretrain/SOURCE/SPLIT_00000.idx.npy     int64 document offsets into the shard: documents + 1 values
    pretrain/SOURCE/SPLIT_00000.json        shard manifest, written last: its presence means "complete"
    pretrain/SOURCE/SPLIT_00000.sig.npy     per document: its exact hash and MinHash (resuming rebuilds
                                            the deduplication index from these)
    pretrain/SOURCE/progress.json           where the source's stream stands after its last complete shards
    pretrain/SOURCE/dropped.sig, stream.rec signatures of indexed documents no shard stores, and each
                                            record's fate (resuming and merge-data read them)

A shard manifest holds a content checksum of its two files: xxh3-64 of every 1 MiB block of the `.bin`
and of the whole `.idx.npy`. `verify_shard` checks all of it (create-data on resume, `verify-data`);
opening a shard for training checks the sizes, the offsets' hash and at most `SAMPLED_BLOCKS` blocks
(the first, the last and others drawn at random), so that opening stays a few milliseconds whatever the
shard's size and a corruption anywhere is found over the opens of a long training. A merged dataset's
`source.json` lists the stems of its shards (`files`), relative to its folder, instead of holding them,
and per shard the documents not to read (`dropped`: duplicates across the parts); a `Shard` opened with
them numbers and counts the other documents only.

Every document is stored as `⮜start-of-text⮞ tokens ⮜end-of-text⮞`. A shard holds whole documents and
at most `shard_tokens` tokens (a single longer document gets a shard of its own). Files are written
under a `.tmp` name and renamed when complete, so an interrupted run leaves only whole shards behind.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xxhash

from dimgpt.errors import BadFileError, ExitCode, NotFoundError

FORMAT_VERSION = 1
CHECKSUM = "xxh3_64"
BLOCK_BYTES = 1 << 20  # checksum granularity: a sampled check reads whole blocks
SAMPLED_BLOCKS = 8  # blocks checked when a shard is opened for training (every block of a shard <= 8 MiB)
SPLITS = ("train", "validation")


class StoreError(BadFileError):
	"""A dataset folder is corrupt or made with another tokenizer; the message says what to do."""


class DataMismatchError(StoreError):
	"""Data made with another tokenizer, format version or settings than the current ones."""

	exit_code = ExitCode.MISMATCH


def token_dtype(vocab_size: int) -> np.dtype:
	"""uint16 while every id fits, uint32 beyond."""
	return np.dtype(np.uint16 if vocab_size <= 65_536 else np.uint32)


def write_json(path: Path, data: dict[str, Any]) -> None:
	"""Write JSON atomically (temporary name, then rename)."""
	tmp = path.with_name(path.name + ".tmp")
	tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
	os.replace(tmp, path)


def rebuild_advice(path: Path) -> str:
	"""How to rebuild the dataset file `path`: create-data keeps every source whose source.json it finds."""
	path = Path(path)
	if path.name == "data.json":
		return "delete it and run create-data again with the same --out (finished sources are kept)"
	return f"delete {path.parent} and run create-data again with the same --out to rebuild that source"


def read_json(path: Path) -> dict[str, Any]:
	"""Read a manifest (a JSON object), naming the file on error."""
	try:
		data = json.loads(Path(path).read_text(encoding="utf-8"))
	except FileNotFoundError:
		raise NotFoundError(
			f"{path} not found: run `.venv/bin/python -m dimgpt create-data` for this folder first"
		) from None
	except (json.JSONDecodeError, UnicodeDecodeError) as error:
		raise StoreError(f"{path} is corrupt ({error}): {rebuild_advice(path)}") from None
	if not isinstance(data, dict):
		raise StoreError(f"{path} is corrupt (not a JSON object): {rebuild_advice(path)}")
	return data


def field(manifest: dict[str, Any], path: Path, *keys: str) -> Any:
	"""manifest[keys[0]][keys[1]]...; a missing key is a corrupt manifest named with the key."""
	value: Any = manifest
	for key in keys:
		if not isinstance(value, dict) or key not in value:
			raise StoreError(f"{path} is corrupt (no {'.'.join(keys)!r} field): {rebuild_advice(path)}")
		value = value[key]
	return value


def validation_count(n: int, fraction: float, minimum: int) -> int:
	"""How many of n conversations (instruction data) are held out: max(minimum, fraction·n), at most half of them."""
	return min(max(minimum, round(n * fraction)), n // 2)


def held_out(i: np.ndarray | int, n: int, held: int) -> np.ndarray:
	"""Whether item i of n is one of the `held` held-out items, spread evenly over the stream.

	Item i is held out when floor((i + 1/2)·held/n) steps up at it: exactly `held` items, no state.
	"""
	i = np.asarray(i, dtype=np.int64)
	if held == 0:
		return np.zeros(i.shape, dtype=bool)
	return ((2 * i + 1) * held // (2 * n)) != ((2 * i - 1) * held // (2 * n))


def shard_stem(directory: Path, split: str, index: int) -> Path:
	return Path(directory) / f"{split}_{index:05d}"


def file_checksum(path: Path) -> str:
	"""xxh3-64 of a whole (small) file, as hex."""
	return xxhash.xxh3_64_hexdigest(Path(path).read_bytes())


def block_checksums(path: Path) -> list[str]:
	"""xxh3-64 of every BLOCK_BYTES block of a file, as hex (the file is read once, block by block)."""
	sums = []
	with open(path, "rb") as f:
		while block := f.read(BLOCK_BYTES):
			sums.append(xxhash.xxh3_64_hexdigest(block))
	return sums


def verify_shard(stem: Path, manifest: dict[str, Any], *, sample: int | None = None) -> None:
	"""Check a shard's files against its manifest: sizes, then the content checksum (`verify_checksum`)."""
	stem = Path(stem)
	bin_path, idx_path = stem.with_suffix(".bin"), stem.with_suffix(".idx.npy")
	itemsize = np.dtype(manifest["dtype"]).itemsize
	if not bin_path.exists() or bin_path.stat().st_size != manifest["tokens"] * itemsize:
		raise StoreError(f"{bin_path} is missing or truncated: {rebuild_advice(bin_path)}")
	if not idx_path.exists():
		raise StoreError(f"{idx_path} is missing: {rebuild_advice(bin_path)}")
	verify_checksum(stem, manifest, sample=sample)


def verify_checksum(stem: Path, manifest: dict[str, Any], *, sample: int | None = None) -> None:
	"""Check a shard's content against its manifest's checksum (files of the right sizes).

	sample=None checks every block; sample=k checks the first, the last and k - 2 random blocks.
	A shard written before checksums existed is not checked. Raises StoreError naming the file and the
	rebuild."""
	checksum = manifest.get("checksum")
	if checksum is None:
		return
	bin_path, idx_path = stem.with_suffix(".bin"), stem.with_suffix(".idx.npy")
	if file_checksum(idx_path) != checksum["idx"]:
		raise StoreError(
			f"{idx_path} does not match its checksum (changed after it was written): {rebuild_advice(bin_path)}"
		)
	expected = checksum["bin"]
	blocks = range(len(expected))
	if sample is not None and len(expected) > sample:
		rng = np.random.default_rng()
		middle = rng.choice(np.arange(1, len(expected) - 1), size=max(sample - 2, 0), replace=False)
		blocks = sorted({0, len(expected) - 1, *map(int, middle)})
	with open(bin_path, "rb") as f:
		for b in blocks:
			f.seek(b * checksum["block_bytes"])
			if xxhash.xxh3_64_hexdigest(f.read(checksum["block_bytes"])) != expected[b]:
				raise StoreError(
					f"{bin_path} does not match its checksum at bytes {b * checksum['block_bytes']:,}+ "
					f"(changed after it was written): {rebuild_advice(bin_path)}"
				)


def check_fingerprint(manifest: dict[str, Any], path: Path, fingerprint: str) -> None:
	"""Refuse data made with another tokenizer (or another format version)."""
	if manifest.get("format_version") != FORMAT_VERSION:
		raise DataMismatchError(
			f"{path} has format version {manifest.get('format_version')}, this code reads version "
			f"{FORMAT_VERSION}: delete {path.parent} and run create-data again"
		)
	if manifest.get("tokenizer_fingerprint") != fingerprint:
		raise DataMismatchError(
			f"{path} was made with another tokenizer (fingerprint {manifest.get('tokenizer_fingerprint')}, "
			f"the current vocab has {fingerprint}): delete {path.parent} (or choose another output folder) "
			"to encode it again with this tokenizer"
		)


def complete_shards(
	directory: Path, split: str, fingerprint: str, settings: dict[str, Any], limit: int | None = None
) -> list[dict[str, Any]]:
	"""Manifests of the complete shards 0, 1, ... of a split (at most `limit`); files after them are deleted.

	Complete means: manifest, data and offsets present and matching the checksum (read in full).
	A shard made with another tokenizer, or with other store settings, is refused with a clear message.
	"""
	directory = Path(directory)
	done = []
	index = 0
	while limit is None or index < limit:
		stem = shard_stem(directory, split, index)
		manifest_path = stem.with_suffix(".json")
		if not manifest_path.exists():
			break
		manifest = read_json(manifest_path)
		check_fingerprint(manifest, manifest_path, fingerprint)
		if manifest.get("settings") != settings:
			raise DataMismatchError(
				f"{manifest_path} was made with other settings ({manifest.get('settings')} instead of {settings}): "
				f"delete {directory} (or choose another output folder) to encode it again"
			)
		try:
			verify_shard(stem, manifest)
		except StoreError:
			if stem.with_suffix(".bin").exists() and stem.with_suffix(".idx.npy").exists():  # not just interrupted
				print(f"{stem.with_suffix('.bin')} is damaged: encoding it again", file=sys.stderr)
			break
		done.append(manifest)
		index += 1
	for path in directory.glob(f"{split}_*"):  # partial or orphaned files after the complete prefix
		name = path.name.split(".")[0]
		if int(name.rsplit("_", 1)[1]) >= index or path.name.endswith(".tmp"):
			path.unlink()
	return done


class ShardWriter:
	"""Appends wrapped documents to shards `SPLIT_{index:05d}` of one source folder."""

	def __init__(
		self,
		directory: Path,
		split: str,
		*,
		dtype: np.dtype,
		shard_tokens: int,
		meta: dict[str, Any],
		start_index: int = 0,
		first_document: int = 0,
		on_shard: Any = None,
	) -> None:
		self.directory, self.split, self.dtype, self.shard_tokens = (
			Path(directory),
			split,
			np.dtype(dtype),
			shard_tokens,
		)
		self.meta, self.index, self.first_document, self.on_shard = meta, start_index, first_document, on_shard
		self.directory.mkdir(parents=True, exist_ok=True)
		self.file = None
		self.offsets = [0]
		self.characters = 0
		self.signatures: list[np.ndarray] = []

	def add(self, tokens: np.ndarray, characters: int = 0, signature: np.ndarray | None = None) -> None:
		"""Append one document (already wrapped in start/end-of-text) of `characters` characters.

		signature: the document's deduplication signature (uint32 row), kept beside the shard."""
		if self.file is not None and self.offsets[-1] + len(tokens) > self.shard_tokens:
			self.finish()
		if self.file is None:
			self.file = open(shard_stem(self.directory, self.split, self.index).with_suffix(".bin.tmp"), "wb")  # noqa: SIM115
			self.offsets = [0]
			self.characters = 0
			self.signatures = []
		self.characters += characters
		if signature is not None:
			self.signatures.append(signature)
		self.file.write(np.ascontiguousarray(tokens, dtype=self.dtype).tobytes())
		self.offsets.append(self.offsets[-1] + len(tokens))

	@property
	def open(self) -> bool:
		"""Whether a shard has documents not yet completed."""
		return self.file is not None

	def finish(self) -> None:
		"""Complete the open shard: data, offsets, signatures, then the manifest that marks it complete."""
		if self.file is None:
			return
		self.file.close()
		self.file = None
		stem = shard_stem(self.directory, self.split, self.index)
		offsets = np.asarray(self.offsets, dtype=np.int64)
		with open(stem.with_suffix(".idx.tmp"), "wb") as f:
			np.save(f, offsets)
		if self.signatures:
			with open(stem.with_suffix(".sig.tmp"), "wb") as f:
				np.save(f, np.stack(self.signatures))
			os.replace(stem.with_suffix(".sig.tmp"), stem.with_suffix(".sig.npy"))
		os.replace(stem.with_suffix(".idx.tmp"), stem.with_suffix(".idx.npy"))
		os.replace(stem.with_suffix(".bin.tmp"), stem.with_suffix(".bin"))
		checksum = {
			"algorithm": CHECKSUM,
			"block_bytes": BLOCK_BYTES,
			"bin": block_checksums(stem.with_suffix(".bin")),  # read back from the page cache: ~10 GB/s
			"idx": file_checksum(stem.with_suffix(".idx.npy")),
		}
		manifest = {
			**self.meta,
			"format_version": FORMAT_VERSION,
			"split": self.split,
			"index": self.index,
			"first_document": self.first_document,
			"documents": len(offsets) - 1,
			"tokens": int(offsets[-1]),
			"characters": self.characters,
			"dtype": self.dtype.name,
			"checksum": checksum,
		}
		write_json(stem.with_suffix(".json"), manifest)
		self.first_document += len(offsets) - 1
		self.index += 1
		if self.on_shard is not None:
			self.on_shard(manifest)


@dataclass
class Shard:
	"""One shard opened for reading: tokens memmapped, document offsets in memory.

	`dropped`: documents a merge left out (cross-part duplicates); the reader sees the others only, numbered
	0 .. documents - 1, their tokens counted by `cumulative` (kept documents' lengths summed). Without drops
	the views are the offsets themselves (no copy)."""

	path: Path
	tokens: np.ndarray
	offsets: np.ndarray  # every stored document: documents in the file + 1 values
	dropped: np.ndarray | None = None

	def __post_init__(self) -> None:
		if self.dropped is None or not len(self.dropped):
			self.starts, self.ends, self.cumulative = self.offsets[:-1], self.offsets[1:], self.offsets
		else:
			kept = np.ones(len(self.offsets) - 1, dtype=bool)
			kept[self.dropped] = False
			self.starts, self.ends = self.offsets[:-1][kept], self.offsets[1:][kept]
			self.cumulative = np.zeros(len(self.starts) + 1, dtype=np.int64)
			np.cumsum(self.ends - self.starts, out=self.cumulative[1:])

	@property
	def documents(self) -> int:
		"""Documents read (stored ones less the dropped)."""
		return len(self.starts)

	@property
	def size(self) -> int:
		"""Tokens read (those of the documents read)."""
		return int(self.cumulative[-1])

	def document(self, index: int) -> tuple[int, int]:
		"""(start, end) in `tokens` of document `index` (of those read)."""
		return int(self.starts[index]), int(self.ends[index])

	def locate(self, position: int) -> tuple[int, int]:
		"""(start, end) in `tokens` of the rest of the document holding token `position` (of those read)."""
		d = int(np.searchsorted(self.cumulative, position, side="right")) - 1
		return int(self.starts[d]) + position - int(self.cumulative[d]), int(self.ends[d])


def open_shard(
	stem: Path, manifest: dict[str, Any], *, sample: int | None = SAMPLED_BLOCKS, dropped: np.ndarray | None = None
) -> Shard:
	"""Memory-map a shard, checking its files against the manifest (a sampled checksum: `verify_shard`).

	dropped: indices of documents not to read (a merged dataset's drop list for this shard)."""
	stem = Path(stem)
	bin_path, idx_path = stem.with_suffix(".bin"), stem.with_suffix(".idx.npy")
	rebuild = rebuild_advice(bin_path)
	try:
		dtype, tokens, documents = np.dtype(manifest["dtype"]), int(manifest["tokens"]), int(manifest["documents"])
	except (KeyError, TypeError, ValueError) as error:
		raise StoreError(f"{stem.with_suffix('.json')}: not a valid shard manifest ({error!r}): {rebuild}") from None
	if not bin_path.exists() or bin_path.stat().st_size != tokens * dtype.itemsize:
		raise StoreError(f"{bin_path} is missing or truncated: {rebuild}")
	try:
		offsets = np.load(idx_path, allow_pickle=False)
	except FileNotFoundError:
		raise StoreError(f"{idx_path} is missing: {rebuild}") from None
	except (ValueError, OSError, EOFError):
		# numpy's own message about pickled data suggests loading it unsafely: never pass that on.
		raise StoreError(
			f"{idx_path} is not a valid offsets file (corrupt, or not plain int64 numbers): {rebuild}"
		) from None
	if (
		offsets.dtype != np.int64
		or offsets.ndim != 1
		or len(offsets) != documents + 1
		or offsets[0] != 0
		or offsets[-1] != tokens
		or np.any(np.diff(offsets) < 0)
	):
		raise StoreError(f"{idx_path} does not match {bin_path}: {rebuild}")
	if dropped is not None and len(dropped) and not 0 <= dropped[0] <= dropped[-1] < documents:
		raise StoreError(
			f"{stem}: the merged dataset drops document {int(dropped[-1])} of {documents}: run merge-data again"
		)
	verify_checksum(stem, manifest, sample=sample)
	data = np.memmap(bin_path, dtype=dtype, mode="r") if tokens else np.zeros(0, dtype=dtype)
	return Shard(bin_path, data, offsets, dropped)


def checked_ids(shard: Shard, start: int, end: int, vocab_size: int) -> np.ndarray:
	"""Tokens [start, end) of a shard, refused if one is outside the vocabulary (a corrupt shard).

	Checked on every read, so that a bad id is named here rather than met as an IndexError in the
	embedding; a max over a row costs about a microsecond.
	"""
	ids = shard.tokens[start:end]
	if len(ids) and int(ids.max()) >= vocab_size:
		position = start + int(np.argmax(ids >= vocab_size))
		raise StoreError(
			f"{shard.path}: token id {int(shard.tokens[position])} at position {position} is outside the vocabulary "
			f"of {vocab_size} tokens, the shard is corrupt: {rebuild_advice(shard.path)}"
		)
	return ids


def open_source(directory: Path, split: str) -> tuple[dict[str, Any], list[Shard]]:
	"""The source manifest and the shards of one split of a complete pretraining source."""
	directory = Path(directory)
	path = directory / "source.json"
	manifest = read_json(path)
	if manifest.get("format_version") != FORMAT_VERSION:
		raise DataMismatchError(
			f"{path}: format version {manifest.get('format_version')} is not {FORMAT_VERSION}: delete "
			f"{directory} and run create-data again"
		)
	stems = source_shards(directory, manifest, split)
	drops = dropped_documents(directory, manifest, split)
	shards = [open_shard(stem, read_json(stem.with_suffix(".json")), dropped=drop) for stem, drop in zip(stems, drops)]
	return manifest, shards


def source_shards(directory: Path, manifest: dict[str, Any], split: str) -> list[Path]:
	"""The shard stems of one split of a source: its own, or those a merged manifest points at."""
	path = Path(directory) / "source.json"
	if "files" in manifest:
		return [(Path(directory) / stem).resolve() for stem in field(manifest, path, "files", split)]
	return [shard_stem(directory, split, i) for i in range(int(field(manifest, path, "splits", split, "shards")))]


def dropped_documents(directory: Path, manifest: dict[str, Any], split: str) -> list[np.ndarray | None]:
	"""Per shard of `source_shards`, the documents not to read (None: all are read).

	A merged manifest holds them in `dropped` (per split, one sorted list per file): documents a part kept
	that are duplicates of another part's, found by merge-data (their tokens stay in the part's shard)."""
	path = Path(directory) / "source.json"
	again = f"run `.venv/bin/python -m dimgpt merge-data {Path(directory).parent.parent}` again"
	stems = field(manifest, path, "files", split) if "files" in manifest else None
	if stems is None or "dropped" not in manifest:
		count = len(stems) if stems is not None else int(field(manifest, path, "splits", split, "shards"))
		return [None] * count
	lists = field(manifest, path, "dropped", split)
	if not isinstance(lists, list) or len(lists) != len(stems):
		raise StoreError(f"{path}: `dropped` does not list one drop list per file of {split}: {again}")
	out: list[np.ndarray | None] = []
	for stem, drop in zip(stems, lists):
		try:
			indices = np.asarray(drop, dtype=np.int64)
		except (TypeError, ValueError):
			raise StoreError(f"{path}: the drop list of {stem} is not a list of integers: {again}") from None
		if indices.ndim != 1 or np.any(indices < 0) or np.any(np.diff(indices) <= 0):
			raise StoreError(f"{path}: the drop list of {stem} is not increasing document numbers: {again}")
		out.append(indices if len(indices) else None)
	return out


def verify_dataset(dataset_dir: Path, progress: bool = True) -> tuple[int, list[str]]:
	"""Check every pretraining shard of a dataset in full, and a merged dataset's drop lists against its shards
	and counts; (shards checked, one message per problem)."""
	from tqdm.auto import tqdm

	dataset_dir = Path(dataset_dir)
	summary = read_json(dataset_dir / "data.json")
	stems = []
	problems = []
	for name in summary.get("pretrain", {}):
		directory = dataset_dir / "pretrain" / name
		manifest = read_json(directory / "source.json")
		for split in SPLITS:
			split_stems = source_shards(directory, manifest, split)
			stems += split_stems
			if "dropped" in manifest:
				problems += _check_drops(directory, manifest, split, split_stems)
	total = sum(s.with_suffix(".bin").stat().st_size for s in stems if s.with_suffix(".bin").exists())
	bar = tqdm(total=total, desc="verify", unit="B", unit_scale=True, disable=not progress)
	for stem in stems:
		try:
			verify_shard(stem, read_json(stem.with_suffix(".json")))
		except StoreError as error:
			problems.append(str(error))
		bar.update(stem.with_suffix(".bin").stat().st_size if stem.with_suffix(".bin").exists() else 0)
	bar.close()
	return len(stems), problems


def _check_drops(directory: Path, manifest: dict[str, Any], split: str, stems: list[Path]) -> list[str]:
	"""Problems of a merged source's drop lists for one split: malformed, out of range, or counts that differ."""
	try:
		drops = dropped_documents(directory, manifest, split)
	except StoreError as error:
		return [str(error)]
	kept = 0
	for stem, drop in zip(stems, drops):
		if not stem.with_suffix(".json").exists():
			continue  # the shard check names it
		documents = int(read_json(stem.with_suffix(".json"))["documents"])
		if drop is not None and drop[-1] >= documents:
			return [f"{directory / 'source.json'}: drops document {int(drop[-1])} of {stem}, which holds {documents}"]
		kept += documents - (0 if drop is None else len(drop))
	try:
		expected = field(manifest, directory / "source.json", "splits", split, "documents")
	except StoreError as error:
		return [str(error)]
	if kept != expected:
		return [
			f"{directory / 'source.json'}: {split} holds {kept} documents once the drop lists are applied, the manifest "
			f"says {expected}: run merge-data again"
		]
	return []
