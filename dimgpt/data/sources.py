"""Sources: named text streams of the mix, cut into pieces that workers read on their own.

A piece is a slice of a source one worker reads alone: a byte range of a JSON-lines file (cut at line
starts), row groups of a parquet file, a whole text or compressed file, one shard of a hub dataset's
stream (its data files, as `datasets` splits them), or the embedded corpus. `pieces()` lists them in a
fixed order and `read_piece()` reads one from any record on, so a run can resume inside a stream.

Hub datasets are always streamed (`load_dataset(..., streaming=True)`): nothing is downloaded whole.
A local folder given as a hub source (`hf:/path/to/folder`) goes through the very same streaming code,
which is how it is tested offline. Local files are read directly (json/pyarrow), which is what lets one
large file be split among workers. `read_records` (instruction sources) still streams whole sources.

`documents()` is the stream every later stage sees: stripped texts, those under `min_chars`
characters dropped, exact duplicates (by hash, within the source) dropped and counted. It is
deterministic, so several passes over a source see the same documents in the same order.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import io
import itertools
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dimgpt.config import SourceConfig
from dimgpt.errors import BadFileError, ExitCode

BUILDERS = {".txt": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}


class SourceError(BadFileError):
	"""A source cannot be read; the message names it and says what to do."""


class SourceNotFoundError(SourceError):
	"""A source's files do not exist, or its hub dataset cannot be reached."""

	exit_code = ExitCode.NOT_FOUND


@dataclass
class SourceStats:
	"""What a pass over a source saw."""

	documents: int = 0  # kept
	characters: int = 0  # in the kept documents
	short: int = 0  # dropped: under min_chars
	duplicates: int = 0  # dropped: exact duplicate of an earlier document of the source


def local_files(source: SourceConfig) -> tuple[str, list[str]]:
	"""The datasets builder and the sorted file list of a "files" source (comma-separated paths/globs)."""
	files: list[str] = []
	for pattern in (p.strip() for p in source.path.split(",") if p.strip()):
		pattern = str(Path(pattern).expanduser())
		matches = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [pattern]
		matches = [m for m in matches if Path(m).is_file()]
		if not matches:
			raise SourceNotFoundError(
				f"source {source.name!r}: no file matches {pattern!r}; check the path (relative paths start from {Path.cwd()})"
			)
		files += matches
	suffixes = {_suffix(f) for f in files}
	unknown = suffixes - set(BUILDERS)
	if unknown:
		raise SourceError(
			f"source {source.name!r}: unsupported file type(s) {sorted(unknown)}; use .txt, .jsonl or .parquet"
		)
	builders = {BUILDERS[s] for s in suffixes}
	if len(builders) > 1:
		raise SourceError(f"source {source.name!r}: mixes file types {sorted(suffixes)}; make one source per type")
	return builders.pop(), files


def _suffix(path: str) -> str:
	suffixes = [s for s in Path(path).suffixes if s not in (".gz", ".bz2", ".xz", ".zst")]
	return suffixes[-1].lower() if suffixes else ""


def read_records(source: SourceConfig, *, cache_dir: str | Path | None = None) -> Iterator[dict[str, Any]]:
	"""Raw records (every column) of a hub or file source, streamed in a fixed order: its pieces in turn."""
	if source.kind not in ("files", "hf"):
		raise SourceError(f"source {source.name!r}: kind {source.kind!r} has no records")
	for piece in pieces(source, 1 << 62, cache_dir=cache_dir):
		try:
			yield from _piece_records(source, piece, 0, cache_dir, columns=None)
		except (SourceError, KeyboardInterrupt):
			raise
		except Exception as error:  # json, pyarrow and datasets raise many types: name the file and the reason
			raise SourceError(f"source {source.name!r}: cannot read {piece.path!r} ({_reason(error)})") from None


@dataclass(frozen=True)
class Piece:
	"""A slice of a source: `kind` lines (bytes start..stop of a JSON-lines file), file (a whole file),
	parquet (row groups start..stop), hub (shard `start` of `stop` of split `split`) or embedded."""

	kind: str
	path: str = ""
	start: int = 0
	stop: int = 0
	split: str = ""
	size: int = 0  # bytes on disk (an estimate of its text), 0 when unknown


COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".lz4")


def pieces(source: SourceConfig, piece_bytes: int, *, cache_dir: str | Path | None = None) -> list[Piece]:
	"""The pieces of a source in stream order, each about `piece_bytes` bytes where the format allows."""
	if source.kind == "embedded":
		return [Piece("embedded")]
	if source.kind == "hf":
		result = []
		for split in source.split.split("+"):
			n = _hub_stream(source, split, cache_dir).num_shards
			result += [Piece("hub", source.path, i, n, split) for i in range(n)]
		return result
	builder, files = local_files(source)
	result = []
	for path in files:
		size = os.path.getsize(path)
		if builder == "parquet":
			import pyarrow.parquet as pq

			metadata = pq.ParquetFile(path).metadata
			sizes = [metadata.row_group(g).total_byte_size for g in range(metadata.num_row_groups)]
			start = total = 0
			for g, group in enumerate(sizes):
				total += group
				if total >= piece_bytes or g == len(sizes) - 1:
					result.append(Piece("parquet", path, start, g + 1, size=total))
					start, total = g + 1, 0
		elif builder == "json" and not path.endswith(COMPRESSED) and not _json_array(path):
			cuts = max(1, round(size / piece_bytes))
			bounds = [size * k // cuts for k in range(cuts + 1)]
			result += [Piece("lines", path, a, b, size=b - a) for a, b in itertools.pairwise(bounds)]
		else:  # a text file is one document; a compressed file cannot be entered in the middle
			result.append(Piece("file", path, size=size))
	return result


def _json_array(path: str) -> bool:
	with open(path, "rb") as f:
		return f.read(64).lstrip()[:1] == b"["


def _hub_stream(source: SourceConfig, split: str, cache_dir: str | Path | None):
	"""The streamed hub dataset of one split (hub ids and local folders alike)."""
	try:
		return _load_stream(source.path, source.hf_config, split, str(cache_dir) if cache_dir is not None else None)
	except Exception as error:
		config = f" (config {source.hf_config!r})" if source.hf_config else ""
		raise SourceNotFoundError(
			f"source {source.name!r}: cannot load the Hugging Face dataset {source.path!r}{config}, split "
			f"{split!r}: {_reason(error)}. Streaming it needs access to huggingface.co; offline, use "
			"local files (`--sources PATH.txt PATH.jsonl`, or `--sources embedded`), or set "
			"HF_DATASETS_OFFLINE=1 to read what your Hugging Face cache already holds."
		) from None


@functools.lru_cache(maxsize=16)
def _load_stream(path: str, config: str | None, split: str, cache_dir: str | None):
	"""load_dataset(streaming=True), once per process and split: it resolves the data files (over HTTP for
	the hub), which a worker would otherwise repeat for every piece."""
	from datasets import load_dataset

	return load_dataset(path, config, split=split, streaming=True, cache_dir=cache_dir)


def read_piece(
	source: SourceConfig, piece: Piece, *, skip: int = 0, cache_dir: str | Path | None = None
) -> Iterator[str]:
	"""The raw texts of one piece, from record `skip` on (records before it are passed over unparsed
	where the format allows)."""
	if piece.kind == "embedded":
		from dimgpt.data.corpus import embedded_documents

		yield from (t for i, t in enumerate(embedded_documents()) if i >= skip)
		return
	columns = source.text_column.split("+")
	try:
		for record in _piece_records(source, piece, skip, cache_dir, columns):
			yield _record_text(source, record, columns)
	except (SourceError, KeyboardInterrupt):
		raise
	except Exception as error:  # json, pyarrow and datasets raise many types: name the file and the reason
		raise SourceError(f"source {source.name!r}: cannot read {piece.path!r} ({_reason(error)})") from None


def _piece_records(
	source: SourceConfig, piece: Piece, skip: int, cache_dir: str | Path | None, columns: list[str] | None = None
) -> Iterator[Any]:
	"""The records of a piece from `skip` on; parquet reads only `columns` (None: all)."""
	if piece.kind == "hub":
		stream = _hub_stream(source, piece.split, cache_dir).shard(num_shards=piece.stop, index=piece.start)
		yield from stream.skip(skip) if skip else stream
	elif piece.kind == "parquet":
		import pyarrow.parquet as pq

		file = pq.ParquetFile(piece.path)
		missing = [c for c in columns or () if c not in file.schema_arrow.names]
		if missing:
			raise SourceError(
				f"source {source.name!r}: records have no column {missing[0]!r} (columns: "
				f"{sorted(file.schema_arrow.names)}); set `text_column`"
			)
		n = 0
		for batch in file.iter_batches(row_groups=range(piece.start, piece.stop), columns=columns):
			rows = batch.num_rows
			if n + rows > skip:
				yield from batch.slice(max(0, skip - n)).to_pylist()
			n += rows
	elif piece.kind == "lines":
		with open(piece.path, "rb") as f:
			f.seek(max(piece.start - 1, 0))
			if piece.start > 0:
				f.readline()  # the line under way at `start` belongs to the previous piece
			position, n = f.tell(), 0
			while position < piece.stop:
				line = f.readline()
				if not line:
					break
				position += len(line)
				if line.strip():
					if n >= skip:
						yield json.loads(line)
					n += 1
	elif piece.path.endswith(COMPRESSED) and _suffix(piece.path) in (".jsonl", ".json"):
		import pyarrow as pa

		with io.BufferedReader(pa.input_stream(piece.path, compression="detect")) as f:
			lines = (line for line in f if line.strip())
			yield from (json.loads(line) for i, line in enumerate(lines) if i >= skip)
	elif _suffix(piece.path) == ".json":
		records = json.loads(Path(piece.path).read_bytes())
		yield from records[skip:]
	else:  # a text file, one document
		if skip == 0:
			import pyarrow as pa

			with io.BufferedReader(pa.input_stream(piece.path, compression="detect")) as f:
				yield {source.text_column.split("+")[0]: f.read().decode("utf-8")}


def _record_text(source: SourceConfig, record: Any, columns: list[str]) -> str:
	"""A record's text (several text columns are joined by a blank line)."""
	missing = [c for c in columns if c not in record]
	if missing:
		raise SourceError(
			f"source {source.name!r}: records have no column {missing[0]!r} (columns: {sorted(record)}); "
			"set `text_column`"
		)
	if len(columns) == 1:
		return str(record[columns[0]] or "")
	return "\n\n".join(str(record[c]).strip() for c in columns if record[c]).strip()


def _reason(error: BaseException) -> str:
	lines = str(error).strip().splitlines()
	return f"{type(error).__name__}: {lines[0] if lines else ''}".strip(": ")


def read_texts(source: SourceConfig, *, cache_dir: str | Path | None = None) -> Iterator[str]:
	"""The raw texts of a source, in order: its pieces one after the other."""
	for piece in pieces(source, 1 << 62, cache_dir=cache_dir):
		yield from read_piece(source, piece, cache_dir=cache_dir)


def document_hash(text: str) -> int:
	"""64-bit hash of a document, for exact de-duplication and the validation split."""
	return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def documents(
	source: SourceConfig,
	*,
	min_chars: int = 64,
	stats: SourceStats | None = None,
	cache_dir: str | Path | None = None,
) -> Iterator[str]:
	"""The kept documents of a source: stripped, at least `min_chars` long, exact duplicates dropped.

	Counts go to `stats` as the stream advances. `source.max_chars` stops the stream early.
	"""
	stats = stats if stats is not None else SourceStats()
	seen: set[int] = set()  # ~70 bytes a document: 10M documents hold ~0.7 GB
	for text in read_texts(source, cache_dir=cache_dir):
		text = text.strip()
		if len(text) < min_chars:
			stats.short += 1
			continue
		key = document_hash(text)
		if key in seen:
			stats.duplicates += 1
			continue
		seen.add(key)
		stats.documents += 1
		stats.characters += len(text)
		yield text
		if source.max_chars and stats.characters >= source.max_chars:
			return
