"""Sources: named text streams of the mix, read through Hugging Face `datasets`.

A hub dataset id and local txt/jsonl/parquet files go through the same `load_dataset` call (the
local files as the "text"/"json"/"parquet" builders), so what is tested offline on local files is
the code that streams the hub. The embedded corpus shipped with the project is the third kind.

`documents()` is the stream every later stage sees: stripped texts, those under `min_chars`
characters dropped, exact duplicates (by hash, within the source) dropped and counted. It is
deterministic, so several passes over a source see the same documents in the same order.
"""

from __future__ import annotations

import glob
import hashlib
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
	"""Raw records of a hub or file source, streamed in a fixed order.

	`cache_dir` is datasets' cache; local files are streamed, so it only receives lock files.
	"""
	from datasets import load_dataset

	cache = str(cache_dir) if cache_dir is not None else None
	if source.kind == "files":
		builder, files = local_files(source)
		kwargs: dict[str, Any] = {"sample_by": "document"} if builder == "text" else {}
		try:
			dataset = load_dataset(builder, data_files=files, split="train", streaming=True, cache_dir=cache, **kwargs)
			yield from dataset
		except Exception as error:  # datasets raises many types; the user needs the file and the reason
			raise SourceError(f"source {source.name!r}: cannot read {source.path!r} ({_reason(error)})") from None
		return
	if source.kind != "hf":
		raise SourceError(f"source {source.name!r}: kind {source.kind!r} has no records")
	try:
		dataset = load_dataset(
			source.path, source.hf_config, split=source.split, streaming=source.streaming, cache_dir=cache
		)
		yield from dataset
	except Exception as error:
		config = f" (config {source.hf_config!r})" if source.hf_config else ""
		raise SourceNotFoundError(
			f"source {source.name!r}: cannot load the Hugging Face dataset {source.path!r}{config}, split "
			f"{source.split!r}: {_reason(error)}. Downloading needs access to huggingface.co; offline, use "
			"local files (`--sources PATH.txt PATH.jsonl`, or `--sources embedded`), or set "
			"HF_DATASETS_OFFLINE=1 to read what your Hugging Face cache already holds."
		) from None


def _reason(error: BaseException) -> str:
	lines = str(error).strip().splitlines()
	return f"{type(error).__name__}: {lines[0] if lines else ''}".strip(": ")


def read_texts(source: SourceConfig, *, cache_dir: str | Path | None = None) -> Iterator[str]:
	"""The raw texts of a source, in order (several text columns are joined by a blank line)."""
	if source.kind == "embedded":
		from dimgpt.data.corpus import embedded_documents

		yield from embedded_documents()
		return
	columns = source.text_column.split("+")
	for record in read_records(source, cache_dir=cache_dir):
		missing = [c for c in columns if c not in record]
		if missing:
			raise SourceError(
				f"source {source.name!r}: records have no column {missing[0]!r} (columns: {sorted(record)}); "
				"set `text_column`"
			)
		if len(columns) == 1:
			yield str(record[columns[0]] or "")
		else:
			yield "\n\n".join(str(record[c]).strip() for c in columns if record[c]).strip()


def document_hash(text: str) -> int:
	"""64-bit hash of a document, for exact de-duplication."""
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
