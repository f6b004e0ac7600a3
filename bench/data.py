"""Data pipeline benchmark: create-data on 1 vs 2 cores, per-stage rates, filter and dedup cost, peak
memory, the dedup index projected to the release's corpus, and the hours that corpus would take.

Side by side in one run, on all of ../shared/data/corpus_fr (corpus-fr sources, 32k vocabulary):
  (a) the vocabulary, made once (`create-data --vocab-only`), then shared by every run below;
  (b) the encoding job (read, filter, sign, encode, dedup, write) with the vocabulary given, pinned with
      `taskset` to 1 core with 1 worker, and to 2 cores with 2 workers, alternated (1, 2, 2, 1, 1, 2...)
      `--repeat` times; medians and min-max of the wall time and of MB/s of UTF-8 text read; per-stage
      MB/s per worker (bytes over that stage's CPU seconds in the workers), the main process's own
      stages; peak memory of the job polled from here (RSS of the main process; RSS and PSS with its
      workers); the ratio 1 core / 2 cores of the whole job (target >= 1.7x);
  (c) the deduplication index at the release's scale (52M documents): its memory (the filters the libraries
      allocate), main-process wall seconds per document (1 and 2 index processes, and the exact filter
      alone), the expected share of documents wrongly dropped, against the MinHashLSH index used before;
      and on corpus_fr's filtered documents, which near duplicates LSHBloom drops against MinHashLSH;
  (d) projections for the release's corpus (52B tokens from local files) on one 16-core machine and on
      8 of them, from (b)'s per-worker rates and main-process costs, its measured parallel efficiency and
      (c)'s index costs; every assumption is printed with the figures;
  (e) loader batches (PretrainLoader) in tokens/s against the tiny model's training speed.
Run: python -m bench.data [--repeat 3] [--keep DIR] [--vocab 32000] [--tokenizer-chars N]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import psutil

from bench.common import SHARED_DATA, print_table, skip, spread_text, write_results
from dimgpt.data.create import WORKER_STAGES

ROOT = Path(__file__).resolve().parents[1]
RELEASE_TOKENS = 52e9  # the DimensionGPT release's corpus
TOKENS_PER_DOCUMENT = 1_000  # assumed for the release's web-heavy corpus (FineWeb's documents average ~1k tokens)


def run_measured(command: list[str], cwd: Path) -> tuple[float, dict[str, float]]:
	"""Run `command`; return wall seconds and its peak memory in MB, polled from here.

	main_rss: the process itself; tree_rss: with its children (the worker processes), which counts pages
	shared after fork once per process; tree_pss: the same with shared pages split between the processes
	that share them (the memory the job really takes). RSS is polled every 50 ms (microseconds a process);
	PSS, which makes the kernel walk each process's page tables (about 9 ms a process), every second, and
	the list of children every half second: polling PSS every 50 ms took about half a core, which the job
	on 2 cores lost and the job on 1 core (this process on the other core) did not.
	"""
	start = time.perf_counter()
	process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
	parent = psutil.Process(process.pid)
	peak = {"main_rss": 0.0, "tree_rss": 0.0, "tree_pss": 0.0}
	tree: list[psutil.Process] = [parent]
	poll = 0
	while process.poll() is None:
		try:
			if poll % 10 == 0:
				tree = [parent, *parent.children(recursive=True)]
			if poll % 20 == 0:
				peak["tree_pss"] = max(peak["tree_pss"], sum(p.memory_full_info().pss for p in tree) / 2**20)
			infos = [p.memory_info() for p in tree]
			peak["main_rss"] = max(peak["main_rss"], infos[0].rss / 2**20)
			peak["tree_rss"] = max(peak["tree_rss"], sum(i.rss for i in infos) / 2**20)
		except psutil.Error:  # a child ended: list them again at the next poll
			poll = -1
		poll += 1
		time.sleep(0.05)
	stderr = process.stderr.read() if process.stderr else ""
	if process.returncode != 0:
		raise RuntimeError(f"{' '.join(command)} failed:\n{stderr[-3000:]}")
	return time.perf_counter() - start, peak


def encode_run(vocab_dir: Path, out: Path, cores: list[int], args: argparse.Namespace) -> dict:
	"""The encoding job (vocabulary given) pinned to `cores` with one worker per core; its figures."""
	shutil.rmtree(out, ignore_errors=True)
	out.mkdir(parents=True)
	shutil.copy(vocab_dir / "vocab.txt", out / "vocab.txt")
	code = (
		"from dimgpt.data.create import create_data, resolve_config; "
		f"create_data(resolve_config('dimensiongpt-0.2b', ['corpus-fr'], [], vocab_size={args.vocab}, "
		f"encode_workers={len(cores)}), {str(out)!r}, progress=False)"
	)
	command = ["taskset", "-c", ",".join(map(str, cores)), sys.executable, "-c", code]
	load = os.getloadavg()[0]
	wall, peak = run_measured(command, ROOT)
	summary = json.loads((out / "data.json").read_text())
	return {"wall_s": wall, "peak_mb": peak, "load_average": load, "times": summary["times"], "work": summary["work"]}


def worker_cpu(run: dict) -> float:
	"""The workers' CPU seconds in one encoding run (every stage)."""
	return sum(run["work"][f"{stage}_s"] for stage in WORKER_STAGES)


def dedup_index_cost(settings, documents: int, capacity: int, processes: int) -> dict[str, float]:
	"""Wall seconds per document of the create-data index (Deduplicator.check on pieces of 500 random
	signatures: no band shared, every document inserted), its filters sized for `capacity` documents."""
	from dimgpt.data.dedup import Deduplicator

	rng = np.random.default_rng(0)
	signatures = rng.integers(0, 2**32 - 1, size=(documents, 2 + settings.dedup_permutations), dtype=np.uint32)
	dedup = Deduplicator(settings, capacity, processes)
	try:
		start = time.perf_counter()
		for piece in range(0, documents, 500):
			dedup.check(signatures[piece : piece + 500])
		seconds = time.perf_counter() - start
		rss = sum(psutil.Process(p.pid).memory_info().rss for p in dedup.processes) / 2**20
	finally:
		dedup.close()
	return {
		"documents": documents,
		"processes": processes,
		"seconds_per_document": seconds / documents,
		"index_processes_rss_mb": rss,
	}


def take_cost(vocab: Path, documents: int, tokens_per_document: int) -> dict[str, float]:
	"""CPU seconds per document of the main process's own work on pieces (unpickling a worker's result, then
	create-data's `_SourceRun.take`: the exact-duplicate filter, the split, appending to the shards and their
	signatures, counts; then the shards completed), on synthetic pieces of 500 documents of `tokens_per_document` random tokens; the
	near-duplicate index is measured apart (its processes answer while this work waits)."""
	from dimgpt.config import DataConfig, QualityConfig, SourceConfig
	from dimgpt.data.create import _settings, _SourceRun, _Timer
	from dimgpt.data.dedup import Deduplicator
	from dimgpt.data.tokenizer import Tokenizer

	config = DataConfig()
	source = SourceConfig("synthetic", path="none.jsonl")
	tokenizer = Tokenizer.load(vocab)
	rng = np.random.default_rng(0)
	width = 2 + config.quality.dedup_permutations
	pieces = []
	for start in range(0, documents, 500):
		n = min(500, documents - start)
		pieces.append(
			pickle.dumps(
				{
					"outcomes": np.zeros(n, dtype=np.int8),
					"tokens": rng.integers(10, tokenizer.vocab_size, size=n * tokens_per_document, dtype=np.uint16),
					"offsets": np.arange(n + 1, dtype=np.int64) * tokens_per_document,
					"characters": np.full(n, 4 * tokens_per_document, dtype=np.int64),
					"signatures": rng.integers(0, 2**32 - 1, size=(n, width), dtype=np.uint32),
					"examples": {},
				}
			)
		)
	with tempfile.TemporaryDirectory() as folder:
		dedup = Deduplicator(QualityConfig(near_duplicates=False), capacity=documents)  # the exact filter only
		settings = _settings(config, source, (0, 1))
		run = _SourceRun(config, source, Path(folder), tokenizer, settings, True, dedup, None, len(pieces))
		timer = _Timer(("dedup", "writing"))
		start = time.process_time()
		for k, piece in enumerate(pieces):
			run.take(k, 0, pickle.loads(piece), timer)
		run.finish()
		seconds = time.process_time() - start
	return {
		"documents": documents,
		"tokens_per_document": tokens_per_document,
		"cpu_s_per_document": seconds / documents,
	}


def library_index_bytes(settings, capacity: int) -> int:
	"""Bytes of the filters the libraries allocate for `capacity` documents: one band group's
	MinHashLSHBloom built for real (times the groups) and the exact filter."""
	from dimgpt.data.dedup import _exact_filter, _group_index, band_groups

	rows = settings.dedup_permutations // settings.dedup_bands
	total = _exact_filter(capacity).num_bits
	for group, bands in enumerate(band_groups(settings.dedup_bands)):
		lsh = _group_index(group, len(bands), rows, capacity, settings.dedup_false_positive)
		total += sum(table.bloom_filter.num_bits for table in lsh.hashtables)
		del lsh
	return total // 8


def old_index_cost(settings, documents: int) -> dict[str, float]:
	"""The index before this version (datasketch MinHashLSH in memory and a set of hashes): bytes
	(tracemalloc) and seconds per document (query + insert), random signatures."""
	from datasketch import LeanMinHash, MinHashLSH

	rng = np.random.default_rng(0)
	signatures = rng.integers(0, 2**32 - 1, size=(documents, settings.dedup_permutations), dtype=np.uint32)
	rows = settings.dedup_permutations // settings.dedup_bands
	tracemalloc.start()
	lsh, exact = MinHashLSH(num_perm=settings.dedup_permutations, params=(settings.dedup_bands, rows)), set()
	start = time.perf_counter()
	for key, signature in enumerate(signatures):
		exact.add(int(signature[0]) << 32 | int(signature[1]))
		minhash = LeanMinHash(seed=1, hashvalues=signature, scheme="affine32")
		if not lsh.query(minhash):
			lsh.insert(key, minhash, check_duplication=False)
	seconds = time.perf_counter() - start
	memory = tracemalloc.get_traced_memory()[0]
	tracemalloc.stop()
	return {"bytes_per_document": memory / documents, "seconds_per_document": seconds / documents}


def _sign(job: tuple) -> np.ndarray:
	"""The signature rows create-data makes for the documents of one piece its filters keep."""
	from dimgpt.data import quality
	from dimgpt.data.sources import document_hash, read_piece

	config, source, piece = job
	rows = []
	for text in read_piece(source, piece):
		text = text.strip()
		if len(text) < config.min_document_chars or quality.rejection(text, config.quality) is not None:
			continue
		key = document_hash(text)
		rows.append([key & 0xFFFFFFFF, key >> 32, *quality.minhash(text, config.quality.dedup_permutations).hashvalues])
	return np.array(rows, dtype=np.uint32).reshape(-1, 2 + config.quality.dedup_permutations)


def corpus_near_duplicates(args: argparse.Namespace) -> dict:
	"""corpus_fr's documents (after the filters, in stream order) through three indexes: this version's
	(LSHBloom: every document enters), datasketch's MinHashLSH as before this version (only kept documents
	enter) and MinHashLSH with every document entering (the same rule as LSHBloom, exact tables: what
	differs from it is the Bloom filters' false positives). Which documents each drops as near duplicates."""
	from multiprocessing import Pool

	from datasketch import LeanMinHash, MinHashLSH

	from dimgpt.data.create import resolve_config
	from dimgpt.data.dedup import EXACT, NEAR, Deduplicator, estimate_capacity
	from dimgpt.data.sources import pieces

	config = resolve_config("dimensiongpt-0.2b", ["corpus-fr"], [], vocab_size=args.vocab)
	jobs = [(config, source, piece) for source in config.sources for piece in pieces(source, config.piece_bytes)]
	with Pool(2) as pool:
		rows = np.concatenate(pool.map(_sign, jobs, chunksize=1))
	settings = config.quality
	capacity = estimate_capacity(settings, [sum(j[2].size for j in jobs)])
	dedup = Deduplicator(settings, capacity, processes=1)
	start = time.perf_counter()
	try:
		fates = dedup.check(rows)
	finally:
		dedup.close()
	bloom_seconds = time.perf_counter() - start
	bands, r = settings.dedup_bands, settings.dedup_permutations // settings.dedup_bands
	dropped: dict[str, set[int]] = {"LSHBloom (every document enters)": set(np.flatnonzero(fates == NEAR).tolist())}
	for label, every in (
		("MinHashLSH, kept documents enter (before)", False),
		("MinHashLSH, every document enters", True),
	):
		lsh, seen, near = MinHashLSH(num_perm=settings.dedup_permutations, params=(bands, r)), set(), set()
		for i, row in enumerate(rows):
			if row[:2].tobytes() in seen:
				continue
			seen.add(row[:2].tobytes())
			minhash = LeanMinHash(seed=1, hashvalues=row[2:], scheme="affine32")
			hit = bool(lsh.query(minhash))
			if hit:
				near.add(i)
			if every or not hit:
				lsh.insert(i, minhash, check_duplication=False)
		dropped[label] = near
	reference = dropped["LSHBloom (every document enters)"]
	return {
		"documents": len(rows),
		"exact_duplicates": int((fates == EXACT).sum()),
		"capacity": capacity,
		"bloom_seconds_per_document": bloom_seconds / max(len(rows), 1),
		"near_duplicates": {k: len(v) for k, v in dropped.items()},
		"only_in_lshbloom": {k: len(reference - v) for k, v in dropped.items()},
		"not_in_lshbloom": {k: len(v - reference) for k, v in dropped.items()},
	}


def tiny_training_tokens_per_second(steps: int = 6) -> float:
	"""Forward + backward + AdamW step of the tiny model on CPU, tokens per second (median of `steps`)."""
	import torch

	from dimgpt.model.transformer import Transformer
	from dimgpt.presets import get_preset

	preset = get_preset("tiny")
	torch.manual_seed(0)
	model = Transformer(preset.model)
	optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
	B, T = preset.train.batch_size, preset.model.context_length
	x = torch.randint(10, preset.model.vocab_size, (B, T))
	times = []
	for _ in range(steps):
		start = time.perf_counter()
		logits = model(x)
		loss = torch.nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), x.view(-1))
		loss.backward()
		optimizer.step()
		optimizer.zero_grad(set_to_none=True)
		times.append(time.perf_counter() - start)
	return B * T / statistics.median(times)


def loader_tokens_per_second(out: Path, batch_size: int, context: int, prefetch: bool, seconds: float = 3.0) -> float:
	from dimgpt.data.loader import PretrainLoader

	loader = PretrainLoader(out, "train", batch_size, context, seed=0)
	n = 0
	start = time.perf_counter()
	while time.perf_counter() - start < seconds:
		if prefetch:
			loader.next_batch()
		else:
			loader.make_batch(n)
		n += 1
	elapsed = time.perf_counter() - start
	loader.close()
	return n * batch_size * context / elapsed


def main() -> None:
	parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
	parser.add_argument("--vocab", type=int, default=32_000)
	parser.add_argument("--tokenizer-chars", type=int, default=50_000_000, help="tokenizer sample for (a)")
	parser.add_argument("--keep", help="keep the dataset folders under this directory")
	parser.add_argument("--repeat", type=int, default=3, help="runs of each setting, alternated")
	parser.add_argument("--dedup-documents", type=int, default=200_000, help="documents put in the index in (c)")
	args = parser.parse_args()
	if not (SHARED_DATA / "corpus_fr").is_dir():
		skip(f"this benchmark needs the French corpus at {SHARED_DATA / 'corpus_fr'}")
	cores = sorted(os.sched_getaffinity(0))
	if len(cores) < 2:
		skip("this benchmark compares 1 and 2 cores: it needs 2")
	base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-data-"))
	base.mkdir(parents=True, exist_ok=True)
	results: dict = {"vocab": args.vocab, "cpus": os.cpu_count(), "load_average_at_start": os.getloadavg()}
	print(f"load average at start: {os.getloadavg()} (other processes on this machine skew the timings)")

	# (a) the vocabulary
	vocab_dir = base / "vocab"
	if not (vocab_dir / "vocab.txt").exists():
		command = [sys.executable, "-m", "dimgpt", "create-data", "--preset", "dimensiongpt-0.2b", "--sources"]
		command += ["corpus-fr", "--out", str(vocab_dir), "--vocab-only", "--no-progress", "--vocab-size"]
		command += [str(args.vocab), "--tokenizer-chars", str(args.tokenizer_chars)]
		wall, _ = run_measured(command, ROOT)
		print(f"(a) vocabulary of {args.vocab:,} tokens from {args.tokenizer_chars:,} sampled characters: {wall:.1f} s")
		results["vocab_s"] = wall

	# (b) the job on 1 core then 2, alternated
	settings = {"1 core, 1 worker": cores[:1], "2 cores, 2 workers": cores[:2]}
	runs: dict[str, list[dict]] = {label: [] for label in settings}
	for r in range(args.repeat):
		order = list(settings) if r % 2 == 0 else list(reversed(settings))
		for label in order:
			runs[label].append(encode_run(vocab_dir, base / "encode", settings[label], args))
			print(f"  {label}: {runs[label][-1]['wall_s']:.1f} s (load {runs[label][-1]['load_average']:.1f})")
	keep_dir = base / "kept"
	shutil.rmtree(keep_dir, ignore_errors=True)
	shutil.copytree(base / "encode", keep_dir)
	megabytes = runs["1 core, 1 worker"][0]["work"]["bytes"] / 1e6
	rows, stage_rows = [], []
	for label, items in runs.items():
		walls = [i["times"]["encode_wall"] for i in items]
		rows.append(
			[
				label,
				spread_text([i["wall_s"] for i in items]),
				spread_text(walls),
				spread_text([megabytes / w for w in walls]),
				spread_text([i["peak_mb"]["main_rss"] for i in items]),
				spread_text([i["peak_mb"]["tree_pss"] for i in items]),
				spread_text([i["work"]["start_s"] for i in items]),
				spread_text([worker_cpu(i) / i["work"]["worker_span_s"] for i in items]),
				spread_text([i["load_average"] for i in items]),
			]
		)
		for stage in WORKER_STAGES:
			rates = [i["work"]["bytes"] / 1e6 / max(i["work"][f"{stage}_s"], 1e-9) for i in items]
			stage_rows.append(
				[label, f"worker: {stage}", spread_text(rates), spread_text([i["work"][f"{stage}_s"] for i in items])]
			)
		for stage in ("dedup", "writing", "waiting"):
			secs = [i["times"][stage] for i in items]
			stage_rows.append(
				[label, f"main: {stage}", spread_text([megabytes / max(s, 1e-9) for s in secs]), spread_text(secs)]
			)
	one = [i["times"]["encode_wall"] for i in runs["1 core, 1 worker"]]
	two = [i["times"]["encode_wall"] for i in runs["2 cores, 2 workers"]]
	pairs = [a / b for a, b in zip(one, two)]
	ratio = statistics.median(one) / statistics.median(two)
	# the same after the start-up (a fixed cost, whatever the corpus size)
	after = [
		[i["times"]["encode_wall"] - i["work"]["start_s"] for i in runs[label]]
		for label in ("1 core, 1 worker", "2 cores, 2 workers")
	]
	after_pairs = [a / b for a, b in zip(*after)]
	print_table(
		f"(b) create-data's encoding job on corpus_fr ({megabytes:.1f} MB of UTF-8 read, vocab given), "
		f"median (min-max) of {args.repeat}: whole job 1 core / 2 cores = {ratio:.2f}x (target >= 1.7x; "
		f"per alternated pair {spread_text(pairs)}); after the start-up {spread_text(after_pairs)}. Start-up: "
		"from the job's start to the workers' start (trie, kernel, forks); workers' use of their cores: their "
		"CPU seconds / the sum of their spans (first piece's start to last piece's end)",
		[
			"setting",
			"process wall s",
			"job wall s",
			"MB/s",
			"main RSS MB",
			"job PSS MB",
			"start-up s",
			"workers' use",
			"load avg",
		],
		rows,
	)
	print_table(
		"(b) per stage: MB/s of UTF-8 per worker (bytes / that stage's CPU seconds), and the main process's stages",
		["setting", "stage", "MB/s", "seconds"],
		stage_rows,
	)
	work = runs["2 cores, 2 workers"]
	per_gb = {
		stage: statistics.median([i["work"][f"{stage}_s"] / (i["work"]["bytes"] / 1e9) for i in work])
		for stage in WORKER_STAGES
	}
	per_gb["dedup (main)"] = statistics.median([i["times"]["dedup"] / (i["work"]["bytes"] / 1e9) for i in work])
	print(
		"cost per GB of UTF-8, CPU seconds: "
		+ ", ".join(f"{k} {v:,.0f}" for k, v in per_gb.items())
		+ f"; filters + dedup: {per_gb['filter'] + per_gb['sign'] + per_gb['dedup (main)']:,.0f} s/GB"
	)
	results["encode"] = {
		"megabytes": megabytes,
		"runs": runs,
		"ratio_1_over_2": ratio,
		"pair_ratios": pairs,
		"pair_ratios_after_start_up": after_pairs,
	}
	results["cost_per_gb_cpu_s"] = per_gb

	# (c) the dedup index
	from dimgpt.config import QualityConfig
	from dimgpt.data.dedup import index_bytes, index_processes, wrongly_dropped

	settings = QualityConfig()
	summary = json.loads((keep_dir / "data.json").read_text())
	tokens = sum(s["tokens"] for src in summary["pretrain"].values() for s in src["splits"].values())
	bytes_per_token = megabytes * 1e6 / tokens
	documents = int(RELEASE_TOKENS / TOKENS_PER_DOCUMENT)
	allocated = library_index_bytes(settings, documents)
	assert abs(allocated - index_bytes(settings, documents)) < 1e6, "the sizing formula is not the libraries'"
	near = corpus_near_duplicates(args)
	costs = {
		"LSHBloom, 1 index process": dedup_index_cost(settings, args.dedup_documents, documents, 1),
		"LSHBloom, 2 index processes": dedup_index_cost(settings, args.dedup_documents, documents, 2),
		"exact filter only (near_duplicates off)": dedup_index_cost(
			QualityConfig(near_duplicates=False), args.dedup_documents, documents, 1
		),
	}
	old = old_index_cost(settings, min(args.dedup_documents, 30_000))
	rows = [
		[
			"MinHashLSH + set (before)",
			f"{old['bytes_per_document']:,.0f}",
			f"{old['bytes_per_document'] * documents / 1e9:,.0f}",
			f"{1e6 * old['seconds_per_document']:.0f}",
			"0",
		]
	]
	for label, cost in costs.items():
		current = settings if "LSHBloom" in label else QualityConfig(near_duplicates=False)
		rows.append(
			[
				label,
				f"{index_bytes(current, documents) / documents:.1f}",
				f"{index_bytes(current, documents) / 1e9:.2f}",
				f"{1e6 * cost['seconds_per_document']:.1f}",
				f"{100 * wrongly_dropped(current, documents):.4f} %",
			]
		)
	print_table(
		f"(c) dedup index at the release's scale: 52B tokens at {TOKENS_PER_DOCUMENT:,} tokens a document = "
		f"{documents / 1e6:,.0f}M documents; {settings.dedup_bands} bands x "
		f"{settings.dedup_permutations // settings.dedup_bands} rows, {settings.dedup_false_positive:g} false "
		f"positives per band filter at capacity; main-process wall us per document over {args.dedup_documents:,} "
		"random signatures (no band shared: each document inserted) in pieces of 500, filters sized for 52M",
		["index", "bytes/document", "GB at 52M", "main us/document", "wrongly dropped"],
		rows,
	)
	print_table(
		f"(c) corpus_fr's {near['documents']:,} filtered documents in stream order ({near['exact_duplicates']} exact "
		f"duplicates): near duplicates dropped by each index; LSHBloom sized for {near['capacity']:,} documents",
		["index", "near duplicates", "dropped only by LSHBloom", "dropped only by this one"],
		[[k, v, near["only_in_lshbloom"][k], near["not_in_lshbloom"][k]] for k, v in near["near_duplicates"].items()],
	)
	results["dedup_index"] = {
		"release_documents": documents,
		"release_bytes": allocated,
		"release_wrongly_dropped": wrongly_dropped(settings, documents),
		"costs": costs,
		"before": old,
		"corpus_fr": near,
	}

	# (d) projections
	release_bytes = RELEASE_TOKENS * bytes_per_token
	cpu_per_byte = statistics.median([worker_cpu(i) / i["work"]["bytes"] for i in work])
	# parallel efficiency at 2 workers while they run: their CPU seconds over their spans (the start-up, a
	# fixed cost of seconds, is not part of it: it is added whole below)
	efficiency = statistics.median([worker_cpu(i) / i["work"]["worker_span_s"] for i in work])
	start_up = statistics.median([i["wall_s"] - i["times"]["encode_wall"] + i["work"]["start_s"] for i in work])
	# the main process: its own work on each document (take_cost: exact filter, split, shard writing, at the
	# release's 1,000 tokens a document), and its wait on the busiest index process (measured above at 52M)
	take = take_cost(vocab_dir / "vocab.txt", args.dedup_documents // 4, TOKENS_PER_DOCUMENT)
	take_per_doc = take["cpu_s_per_document"]
	exact_per_doc = costs["exact filter only (near_duplicates off)"]["seconds_per_document"]
	near_per_doc = costs["LSHBloom, 1 index process"]["seconds_per_document"] - exact_per_doc  # 14 bands, 1 process
	groups = -(-settings.dedup_bands // 2)
	projections = {}
	for machines in (1, 8):
		workers = 16 * machines
		processes = min(groups, index_processes(workers // machines))  # as create-data starts them
		busiest = -(-groups // processes) * 2 / settings.dedup_bands  # share of the bands the busiest one holds
		per_doc = take_per_doc + near_per_doc * busiest
		main_hours = documents * per_doc / machines / 3600
		# the workers' CPU, plus the index processes' (every band of every document), over the cores
		cpu = release_bytes * cpu_per_byte + documents * near_per_doc
		ideal = cpu / workers / 3600 + start_up / 3600
		measured = (ideal - start_up / 3600) / min(efficiency, 1.0) + start_up / 3600
		projections[machines] = {
			"index_processes": processes,
			"main_s_per_document": per_doc,
			"worker_hours_ideal": ideal,
			"worker_hours_measured_efficiency": measured,
			"main_hours": main_hours,
			"hours_ideal": max(ideal, main_hours),
			"hours_measured_efficiency": max(measured, main_hours),
		}
	print_table(
		f"(d) projected hours for 52B tokens from local files ({release_bytes / 1e9:,.0f} GB of UTF-8 at the measured "
		f"{bytes_per_token:.2f} bytes a token, {documents / 1e6:.0f}M documents; {cpu_per_byte * 1e9:,.0f} CPU s per GB "
		f"in the workers, plus the index processes' {1e6 * near_per_doc:.0f} us a document; parallel efficiency "
		f"{efficiency:.2f} measured at 2 workers (their CPU seconds / their spans), or 1; plus the start-up "
		f"({start_up:.1f} s: process start to the workers' start, once a machine); the main process beside "
		f"them: {1e6 * take_per_doc:.0f} CPU us of its own work a document (exact filter, split, shards: "
		f"{take['documents']:,} synthetic documents of {TOKENS_PER_DOCUMENT:,} tokens) + its wait on the busiest "
		"index process (its share of the bands x (c)'s 1-process figure); target <= 1 h on one machine)",
		[
			"machines",
			"workers",
			"index proc.",
			"main us/doc",
			"workers h (eff. 1)",
			"workers h (meas. eff.)",
			"main h",
			"projected h",
		],
		[
			[
				m,
				16 * m,
				p["index_processes"],
				f"{1e6 * p['main_s_per_document']:.1f}",
				p["worker_hours_ideal"],
				p["worker_hours_measured_efficiency"],
				p["main_hours"],
				f"{p['hours_ideal']:.3g} - {p['hours_measured_efficiency']:.3g}",
			]
			for m, p in projections.items()
		],
	)
	results["projection"] = {
		"bytes_per_token": bytes_per_token,
		"cpu_s_per_byte": cpu_per_byte,
		"efficiency_2_workers": efficiency,
		"start_up_s": start_up,
		"main_exact_s_per_document": exact_per_doc,
		"index_near_s_per_document_one_process": near_per_doc,
		"main_take": take,
		"tokens_per_document_assumed": TOKENS_PER_DOCUMENT,
		"machines": projections,
	}

	# (e) loader vs training
	train_tps = tiny_training_tokens_per_second()
	rows, loader = [], {}
	for name, (B, T) in {"tiny": (16, 128), "dimensiongpt-0.2b": (16, 512)}.items():
		direct = loader_tokens_per_second(keep_dir, B, T, prefetch=False)
		threaded = loader_tokens_per_second(keep_dir, B, T, prefetch=True)
		loader[name] = {"batch": [B, T], "assembly_tokens_s": direct, "next_batch_tokens_s": threaded}
		rows.append([name, f"{B}x{T}", f"{direct:,.0f}", f"{threaded:,.0f}", f"{direct / train_tps:.0f}x"])
	print_table(
		f"(e) loader tokens/s vs tiny training on this CPU ({train_tps:,.0f} tokens/s; target >= 10x)",
		["shape", "batch", "assembly tok/s", "next_batch tok/s", "assembly / tiny training"],
		rows,
	)
	results["loader"] = loader
	results["tiny_training_tokens_s"] = train_tps
	results["load_average_at_end"] = os.getloadavg()
	print(f"load average at end: {os.getloadavg()}")
	write_results("data", results)
	if not args.keep:
		shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
	main()
