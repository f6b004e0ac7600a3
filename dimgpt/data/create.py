"""The create-data job: sources → tokenizer sample → vocab → sharded token store, plus instruction data.

Stages (each skipped when its output is already complete, so an interrupted run resumes):
1. scan: one pass over every source counts the kept documents and characters (the mix weights and
   the validation split need them); cached in `scan.json`.
2. sample: `tokenizer_chars` characters drawn across sources in proportion to size × multiplier
   (paragraph by paragraph), streamed to `tokenizer_sample.txt`.
3. vocab: the tokenizer trained on the sample, saved as `vocab.txt` (skipped when one exists).
4. encode: every document cleaned, wrapped and tokenized in parallel, written to shards (`store`).
5. instruct: the instruction conversations, formatted and stored (`instruct`).
Then `data.json` holds the DataConfig and the summary.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from dimgpt.config import DataConfig, SourceConfig, to_dict
from dimgpt.presets import SOURCE_LISTS, get_preset, get_sources
from dimgpt.data.instruct import build_instruct_source
from dimgpt.data.sources import SourceError, SourceStats, documents, local_files, read_records
from dimgpt.data.store import (
	FORMAT_VERSION,
	SPLITS,
	ShardWriter,
	StoreError,
	check_fingerprint,
	complete_shards,
	held_out,
	read_json,
	token_dtype,
	validation_count,
	write_json,
)
from dimgpt.data.tokenizer import END_OF_TEXT, START_OF_TEXT, Tokenizer
from dimgpt.errors import UsageError

STAGES = ("scan", "sampling", "vocab training", "reading", "encoding", "writing", "instruct")


class _Timer:
	"""Seconds spent per stage."""

	def __init__(self) -> None:
		self.seconds = dict.fromkeys(STAGES, 0.0)

	@contextmanager
	def __call__(self, stage: str):
		start = time.perf_counter()
		try:
			yield
		finally:
			self.seconds[stage] += time.perf_counter() - start


def create_data(
	config: DataConfig,
	out_dir: str | Path,
	*,
	force_tokenizer: bool = False,
	progress: bool = True,
	on_shard: Callable[[dict[str, Any]], None] | None = None,
	cache_dir: str | Path | None = None,
) -> dict[str, Any]:
	"""Build (or finish building) the dataset folder `out_dir`; return its summary (also in data.json).

	on_shard: called with each shard manifest once the shard is complete on disk.
	cache_dir: datasets' cache for hub sources (default: the Hugging Face cache in your home, usually
	~/.cache/huggingface/datasets); local files are streamed and only leave lock files, in
	`out_dir/.hf_cache`.
	"""
	for source in (*config.sources, *config.instruct_sources):
		if source.kind == "files":
			local_files(source)  # a missing file fails now, before anything is written or scanned
	out = Path(out_dir)
	out.mkdir(parents=True, exist_ok=True)
	timer = _Timer()
	stream = _streamer(config, out, cache_dir)
	trained = force_tokenizer or not (out / "vocab.txt").exists()
	tokenizer = train_tokenizer(config, out, force=force_tokenizer, progress=progress, cache_dir=cache_dir, timer=timer)
	with timer("scan"):
		scan = scan_sources(config, out, progress=progress, cache_dir=cache_dir)

	pretrain = {}
	for source in config.sources:
		pretrain[source.name] = _encode_source(config, source, out, tokenizer, scan, stream, timer, progress, on_shard)
	weights = {name: s["splits"]["train"]["tokens"] * s["multiplier"] for name, s in pretrain.items()}
	total = sum(weights.values()) or 1.0
	for name, s in pretrain.items():
		s["share"] = weights[name] / total

	instruct = {}
	with timer("instruct"):
		for source in config.instruct_sources:
			cache = out / ".hf_cache" if source.kind == "files" else cache_dir
			instruct[source.name] = _instruct_source(config, source, out, tokenizer, cache, progress)

	summary = {
		"format_version": FORMAT_VERSION,
		"vocab_size": tokenizer.vocab_size,
		"tokenizer_fingerprint": tokenizer.fingerprint,
		"tokenizer_trained": trained,
		"tokenizer_sample": read_json(out / "tokenizer_sample.json")
		if (out / "tokenizer_sample.json").exists()
		else {},
		"pretrain": pretrain,
		"instruct": instruct,
		"times": timer.seconds,
	}
	write_json(out / "data.json", {**summary, "config": to_dict(config)})
	if progress:
		print_summary(summary)
	return summary


# --- 1. scan ---------------------------------------------------------------------------------------


def _streamer(config: DataConfig, out: Path, cache_dir: str | Path | None) -> Callable:
	"""documents(source) with the config's filter; local files get a datasets cache inside `out`."""

	def stream(source: SourceConfig, stats: SourceStats | None = None):
		cache = out / ".hf_cache" if source.kind == "files" else cache_dir
		return documents(source, min_chars=config.min_document_chars, stats=stats, cache_dir=cache)

	return stream


def scan_sources(
	config: DataConfig, out_dir: str | Path, *, progress: bool = True, cache_dir: str | Path | None = None
) -> dict[str, dict[str, Any]]:
	"""Documents, characters, short and duplicate documents per source (cached in out_dir/scan.json)."""
	out = Path(out_dir)
	out.mkdir(parents=True, exist_ok=True)
	stream = _streamer(config, out, cache_dir)
	path = out / "scan.json"
	key = {"min_document_chars": config.min_document_chars}
	cached = read_json(path) if path.exists() else {}
	result = {}
	for source in config.sources:
		entry = cached.get(source.name)
		if entry is not None and entry.get("source") == to_dict(source) and entry.get("key") == key:
			result[source.name] = entry
			continue
		stats = SourceStats()
		for _ in tqdm(stream(source, stats), desc=f"scan {source.name}", unit="doc", disable=not progress):
			pass
		if stats.documents == 0:
			raise StoreError(
				f"source {source.name!r} has no document of at least {config.min_document_chars} characters "
				f"({stats.short} shorter ones): check its path and text column"
			)
		result[source.name] = {**vars(stats), "source": to_dict(source), "key": key}
		cached[source.name] = result[source.name]
		write_json(path, cached)
	return result


# --- 2-3. tokenizer sample and vocabulary ---------------------------------------------------------


def sample_quotas(config: DataConfig, scan: dict[str, dict[str, int]]) -> dict[str, float]:
	"""Characters to draw from each source: `tokenizer_chars` split by size × multiplier."""
	weights = {s.name: scan[s.name]["characters"] * s.multiplier for s in config.sources}
	total = sum(weights.values())
	if total <= 0:
		raise StoreError("every source has a zero multiplier or no text: nothing to train a tokenizer on")
	return {name: config.tokenizer_chars * w / total for name, w in weights.items()}


def _source_seed(config: DataConfig, name: str) -> list[int]:
	return [config.seed, zlib.crc32(name.encode())]


def _sample(config: DataConfig, out: Path, scan: dict, stream: Callable, progress: bool) -> Path:
	"""Draw paragraphs of every source with probability quota / size; one paragraph per line."""
	path = out / "tokenizer_sample.txt"
	quotas = sample_quotas(config, scan)
	sampled = {}
	with open(path.with_name(path.name + ".tmp"), "w", encoding="utf-8") as f:
		for source in config.sources:
			quota = quotas[source.name]
			probability = min(1.0, quota / scan[source.name]["characters"])
			rng = np.random.default_rng(_source_seed(config, source.name))
			taken = 0
			bar = tqdm(
				total=int(quota), desc=f"sample {source.name}", unit="char", unit_scale=True, disable=not progress
			)
			for text in stream(source):
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
			bar.close()
			sampled[source.name] = taken
	os.replace(path.with_name(path.name + ".tmp"), path)
	write_json(out / "tokenizer_sample.json", {"quotas": quotas, "characters": sampled})
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
	timer = timer or _Timer()
	vocab_path = out / "vocab.txt"
	if force or not vocab_path.exists():
		with timer("scan"):
			scan = scan_sources(config, out, progress=progress, cache_dir=cache_dir)
		with timer("sampling"):
			sample_path = _sample(config, out, scan, _streamer(config, out, cache_dir), progress)
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


# --- 4. encoding -----------------------------------------------------------------------------------


def _earlier_manifest(directory: Path, settings: dict[str, Any], tokenizer: Tokenizer) -> dict[str, Any] | None:
	"""The manifest a finished earlier run left in `directory` with these settings, else None.

	Raises when that run used another tokenizer (its token ids would mean other text)."""
	path = directory / "source.json"
	if not path.exists():
		return None
	manifest = read_json(path)
	check_fingerprint(manifest, path, tokenizer.fingerprint)
	return manifest if manifest.get("settings") == settings else None


def _encode_source(
	config: DataConfig,
	source: SourceConfig,
	out: Path,
	tokenizer: Tokenizer,
	scan: dict,
	stream: Callable,
	timer: _Timer,
	progress: bool,
	on_shard: Callable | None,
) -> dict[str, Any]:
	"""Encode one source into shards per split, keeping complete shards of an earlier run."""
	directory = out / "pretrain" / source.name
	settings = {
		"source": to_dict(source),
		"shard_tokens": config.shard_tokens,
		"min_document_chars": config.min_document_chars,
		"validation_fraction": config.validation_fraction,
		"min_validation_documents": config.min_validation_documents,
	}
	earlier = _earlier_manifest(directory, settings, tokenizer)
	if earlier is not None:
		return earlier
	manifest_path = directory / "source.json"
	if manifest_path.exists():
		raise StoreError(
			f"{manifest_path} was made with other settings: delete {directory} (or choose another output folder)"
		)
	directory.mkdir(parents=True, exist_ok=True)
	n = scan[source.name]["documents"]
	held = validation_count(n, config.validation_fraction, config.min_validation_documents)
	dtype = token_dtype(tokenizer.vocab_size)
	meta = {"source": source.name, "tokenizer_fingerprint": tokenizer.fingerprint, "settings": settings}
	writers, skip = {}, {}
	for split in SPLITS:
		done = complete_shards(directory, split, tokenizer.fingerprint, settings)
		skip[split] = sum(m["documents"] for m in done)
		writers[split] = ShardWriter(
			directory,
			split,
			dtype=dtype,
			shard_tokens=config.shard_tokens,
			meta=meta,
			start_index=len(done),
			first_document=skip[split],
			on_shard=on_shard,
		)
	cores = config.encode_workers or (
		len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
	)
	stats = SourceStats()
	read = [0]

	def batches() -> Iterator[tuple[int, list[tuple[str, str]]]]:
		"""(documents skipped, [(split, text), ...] of about encode_batch_chars characters) in stream order."""
		seen = dict.fromkeys(SPLITS, 0)
		batch: list[tuple[str, str]] = []
		chars = skipped = 0
		for i, text in enumerate(stream(source, stats)):
			read[0] = i + 1
			split = "validation" if held_out(i, n, held) else "train"
			seen[split] += 1
			if seen[split] <= skip[split]:  # already in a complete shard of an earlier run
				skipped += 1
				continue
			batch.append((split, text))
			chars += len(text)
			if chars >= config.encode_batch_chars:
				yield skipped, batch
				batch, chars, skipped = [], 0, 0
		yield skipped, batch

	bar = tqdm(total=n, desc=f"encode {source.name}", unit="doc", disable=not progress)
	tokens_done = 0
	start = time.perf_counter()
	# the next batch is read in a thread while this one is encoded (the tokenizer's workers are processes)
	for skipped, batch in _in_thread(batches(), timer):
		bar.update(skipped)
		if not batch:
			continue
		with timer("encoding"):
			encoded = tokenizer.encode_batch([text for _, text in batch], workers=cores)
		with timer("writing"):
			for (split, text), ids in zip(batch, encoded):
				wrapped = np.empty(len(ids) + 2, dtype=dtype)
				wrapped[0], wrapped[1:-1], wrapped[-1] = START_OF_TEXT, ids, END_OF_TEXT
				writers[split].add(wrapped, len(text))
				tokens_done += len(wrapped)
		bar.update(len(batch))
		bar.set_postfix_str(f"{tokens_done / max(time.perf_counter() - start, 1e-9):,.0f} tokens/s")
	bar.close()
	if read[0] != n:
		raise StoreError(
			f"source {source.name!r} gave {read[0]} documents, the scan counted {n}: it changed since; delete "
			f"{out / 'scan.json'} and {directory} and run again"
		)
	with timer("writing"):
		for writer in writers.values():
			writer.finish()
	splits = {}
	for split in SPLITS:
		shards = [read_json(p) for p in sorted(directory.glob(f"{split}_*.json"))]
		splits[split] = {
			"shards": len(shards),
			"documents": sum(m["documents"] for m in shards),
			"tokens": sum(m["tokens"] for m in shards),
			"characters": sum(m.get("characters", 0) for m in shards),
		}
	manifest = {
		**meta,
		"format_version": FORMAT_VERSION,
		"multiplier": source.multiplier,
		"dtype": dtype.name,
		"documents": n,
		"characters": scan[source.name]["characters"],
		"short": scan[source.name]["short"],
		"duplicates": scan[source.name]["duplicates"],
		"splits": splits,
	}
	write_json(manifest_path, manifest)
	return manifest


def _in_thread(items: Iterator[Any], timer: _Timer, depth: int = 2) -> Iterator[Any]:
	"""Yield what `items` yields, computed up to `depth` items ahead in a background thread.

	Time spent waiting for an item counts as "reading"; an error in the thread is raised here.
	"""
	out: queue.Queue = queue.Queue(maxsize=depth)
	stop = threading.Event()
	end = object()

	def work() -> None:
		try:
			for item in items:
				while not stop.is_set():
					try:
						out.put(item, timeout=0.1)
						break
					except queue.Full:
						continue
				if stop.is_set():
					return
			out.put(end)
		except BaseException as error:
			out.put(error)

	thread = threading.Thread(target=work, daemon=True)
	thread.start()
	try:
		while True:
			with timer("reading"):
				item = out.get()
			if item is end:
				return
			if isinstance(item, BaseException):
				raise item
			yield item
	finally:
		stop.set()


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
	"""One row per pretraining source: documents, characters, tokens, characters per token, share of the mix."""
	rows = []
	for name, s in summary["pretrain"].items():
		tokens = sum(v["tokens"] for v in s["splits"].values())
		rows.append(
			[
				name,
				f"{s['documents']:,}",
				f"{s['duplicates']:,}",
				f"{s['characters']:,}",
				f"{tokens:,}",
				f"{s['characters'] / max(tokens, 1):.2f}",
				f"{100 * s['share']:.1f} %",
			]
		)
	return rows


SUMMARY_HEADER = ("source", "documents", "duplicates", "characters", "tokens", "chars/token", "share")


def print_summary(summary: dict[str, Any]) -> None:
	"""Print the per-source table and the instruction counts."""
	rows = summary_rows(summary)
	widths = [max(len(h), *(len(str(r[i])) for r in rows)) for i, h in enumerate(SUMMARY_HEADER)]
	print(f"\nvocab: {summary['vocab_size']:,} tokens (fingerprint {summary['tokenizer_fingerprint']})")
	print("  ".join(h.rjust(w) for h, w in zip(SUMMARY_HEADER, widths)))
	for row in rows:
		print("  ".join(str(c).rjust(w) for c, w in zip(row, widths)))
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
		default = dataset.replace("/", "-")
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
	changes: dict[str, Any] = {k: v for k, v in overrides.items() if v is not None}
	if len(sources) == 1 and sources[0] in SOURCE_LISTS:
		changes["sources"], changes["instruct_sources"] = get_sources(sources[0])
	elif sources:
		changes["sources"] = tuple(source_from_spec(s) for s in sources)
	if instruct is not None:
		changes["instruct_sources"] = tuple(source_from_spec(s) for s in instruct)
	return dataclasses.replace(config, **changes)


def run_cli(args: Any) -> int:
	"""`python -m dimgpt create-data` (errors a user can fix are `dimgpt.errors.UserError`s)."""
	config = resolve_config(
		args.preset,
		args.sources or (),
		args.instruct,
		vocab_size=args.vocab_size,
		tokenizer_chars=args.tokenizer_chars,
		shard_tokens=args.shard_tokens,
	)
	out = args.out or f"data/{args.preset}"
	create_data(config, out, force_tokenizer=args.force_tokenizer, progress=not args.no_progress)
	print(f"dataset written to {out}")
	return 0
