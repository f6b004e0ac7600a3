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
  (c) the deduplication index alone: datasketch MinHashLSH with this config's bands, filled with random
      signatures (no bucket shared: the most memory a document can take), memory per document
      (tracemalloc) and seconds per document (query + insert), projected to 52B tokens;
  (d) projections for the release's corpus (52B tokens from local files) on one 16-core machine and on
      8 of them, from (b)'s per-worker rates, its measured parallel efficiency and (c)'s main-process cost;
      every assumption is printed with the figures;
  (e) loader batches (PretrainLoader) in tokens/s against the tiny model's training speed.
Run: python -m bench.data [--repeat 3] [--keep DIR] [--vocab 32000] [--tokenizer-chars N]
"""

from __future__ import annotations

import argparse
import json
import os
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

from bench.common import SHARED_DATA, print_table, skip, write_results

ROOT = Path(__file__).resolve().parents[1]
RELEASE_TOKENS = 52e9  # the DimensionGPT release's corpus
TOKENS_PER_DOCUMENT = 1_000  # assumed for the release's web-heavy corpus (FineWeb's documents average ~1k tokens)


def run_measured(command: list[str], cwd: Path) -> tuple[float, dict[str, float]]:
	"""Run `command`; return wall seconds and its peak memory in MB, polled every 50 ms from here.

	main_rss: the process itself; tree_rss: with its children (the worker processes), which counts pages
	shared after fork once per process; tree_pss: the same with shared pages split between the processes
	that share them (the memory the job really takes).
	"""
	start = time.perf_counter()
	process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
	parent = psutil.Process(process.pid)
	peak = {"main_rss": 0.0, "tree_rss": 0.0, "tree_pss": 0.0}
	while process.poll() is None:
		try:
			tree = [parent, *parent.children(recursive=True)]
			infos = [p.memory_full_info() for p in tree]
			peak["main_rss"] = max(peak["main_rss"], infos[0].rss / 2**20)
			peak["tree_rss"] = max(peak["tree_rss"], sum(i.rss for i in infos) / 2**20)
			peak["tree_pss"] = max(peak["tree_pss"], sum(i.pss for i in infos) / 2**20)
		except psutil.Error:
			pass
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


def dedup_index_cost(settings, documents: int) -> dict[str, float]:
	"""Memory (tracemalloc) and time per document of the dedup index, filled with random signatures."""
	from dimgpt.data.create import Deduplicator

	rng = np.random.default_rng(0)
	signatures = rng.integers(0, 2**32 - 1, size=(documents, 2 + settings.dedup_permutations), dtype=np.uint32)
	tracemalloc.start()
	dedup = Deduplicator(settings)
	start = time.perf_counter()
	for signature in signatures:
		dedup.check(signature)
	seconds = time.perf_counter() - start
	memory = tracemalloc.get_traced_memory()[0]
	tracemalloc.stop()
	return {
		"documents": documents,
		"bytes_per_document": memory / documents,
		"seconds_per_document": seconds / documents,
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


def spread(values: list[float]) -> str:
	"""median (min-max)."""
	return f"{statistics.median(values):.3g} ({min(values):.3g}-{max(values):.3g})"


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
				spread([i["wall_s"] for i in items]),
				spread(walls),
				spread([megabytes / w for w in walls]),
				spread([i["peak_mb"]["main_rss"] for i in items]),
				spread([i["peak_mb"]["tree_pss"] for i in items]),
				spread([i["load_average"] for i in items]),
			]
		)
		for stage in ("read", "filter", "sign", "encode"):
			rates = [i["work"]["bytes"] / 1e6 / max(i["work"][f"{stage}_s"], 1e-9) for i in items]
			stage_rows.append(
				[label, f"worker: {stage}", spread(rates), spread([i["work"][f"{stage}_s"] for i in items])]
			)
		for stage in ("dedup", "writing", "waiting"):
			secs = [i["times"][stage] for i in items]
			stage_rows.append([label, f"main: {stage}", spread([megabytes / max(s, 1e-9) for s in secs]), spread(secs)])
	one = [i["times"]["encode_wall"] for i in runs["1 core, 1 worker"]]
	two = [i["times"]["encode_wall"] for i in runs["2 cores, 2 workers"]]
	pairs = [a / b for a, b in zip(one, two)]
	ratio = statistics.median(one) / statistics.median(two)
	print_table(
		f"(b) create-data's encoding job on corpus_fr ({megabytes:.1f} MB of UTF-8 read, vocab given), "
		f"median (min-max) of {args.repeat}: whole job 1 core / 2 cores = {ratio:.2f}x (target >= 1.7x; "
		f"per alternated pair {spread(pairs)})",
		["setting", "process wall s", "job wall s", "MB/s", "main RSS MB", "job PSS MB", "load avg"],
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
		for stage in ("read", "filter", "sign", "encode")
	}
	per_gb["dedup (main)"] = statistics.median([i["times"]["dedup"] / (i["work"]["bytes"] / 1e9) for i in work])
	print(
		"cost per GB of UTF-8, CPU seconds: "
		+ ", ".join(f"{k} {v:,.0f}" for k, v in per_gb.items())
		+ f"; filters + dedup: {per_gb['filter'] + per_gb['sign'] + per_gb['dedup (main)']:,.0f} s/GB"
	)
	results["encode"] = {"megabytes": megabytes, "runs": runs, "ratio_1_over_2": ratio, "pair_ratios": pairs}
	results["cost_per_gb_cpu_s"] = per_gb

	# (c) the dedup index
	from dimgpt.config import QualityConfig

	index = dedup_index_cost(QualityConfig(), args.dedup_documents)
	summary = json.loads((keep_dir / "data.json").read_text())
	tokens = sum(s["tokens"] for src in summary["pretrain"].values() for s in src["splits"].values())
	bytes_per_token = megabytes * 1e6 / tokens
	documents = RELEASE_TOKENS / TOKENS_PER_DOCUMENT
	index_gb = documents * (index["bytes_per_document"] + 8 * 9) / 1e9  # + the exact-hash set (~72 B an entry)
	print(
		f"\n(c) dedup index ({QualityConfig().dedup_bands} bands x {QualityConfig().dedup_permutations // QualityConfig().dedup_bands} "
		f"rows): {index['bytes_per_document']:,.0f} bytes and {1e6 * index['seconds_per_document']:.0f} us per document "
		f"({args.dedup_documents:,} random signatures); the release's 52B tokens at {TOKENS_PER_DOCUMENT:,} tokens a "
		f"document = {documents / 1e6:,.0f}M documents -> {index_gb:,.0f} GB in one process (with the exact-hash set)"
	)
	results["dedup_index"] = {**index, "release_documents": documents, "release_gb": index_gb}

	# (d) projections
	release_bytes = RELEASE_TOKENS * bytes_per_token
	cpu_per_byte = statistics.median(
		[sum(i["work"][f"{s}_s"] for s in ("read", "filter", "sign", "encode")) / i["work"]["bytes"] for i in work]
	)
	# parallel efficiency at 2 workers: the workers' CPU time shared over 2 cores, against the wall time
	efficiency = statistics.median(
		[
			sum(i["work"][f"{s}_s"] for s in ("read", "filter", "sign", "encode")) / 2 / i["times"]["encode_wall"]
			for i in work
		]
	)
	main_per_doc = index["seconds_per_document"] + statistics.median(
		[i["times"]["writing"] / max(sum(s["documents"] for s in summary["pretrain"].values()), 1) for i in work]
	)
	projections = {}
	for machines in (1, 8):
		workers = 16 * machines
		ideal = release_bytes * cpu_per_byte / workers / 3600  # every worker busy all the time
		measured = ideal / min(efficiency, 1.0)  # at the efficiency (b) got on this machine
		main_hours = documents / machines * main_per_doc / 3600  # one coordinating process per machine, in parallel
		projections[machines] = {
			"worker_hours_ideal": ideal,
			"worker_hours_measured_efficiency": measured,
			"main_hours": main_hours,
			"hours_ideal": max(ideal, main_hours),
			"hours_measured_efficiency": max(measured, main_hours),
		}
	print_table(
		f"(d) projected hours for 52B tokens from local files ({release_bytes / 1e9:,.0f} GB of UTF-8 at the measured "
		f"{bytes_per_token:.2f} bytes a token; {cpu_per_byte * 1e9:,.0f} CPU s per GB in the workers; parallel "
		f"efficiency {efficiency:.2f} measured at 2 workers (workers' CPU seconds / 2 / wall: what this machine gave), "
		f"or 1; {1e6 * main_per_doc:.0f} CPU us per document in the main process, beside the workers; target <= 1 h "
		"on one machine)",
		["machines", "workers", "workers h (eff. 1)", "workers h (measured eff.)", "main process h", "projected h"],
		[
			[
				m,
				16 * m,
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
		"main_s_per_document": main_per_doc,
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
