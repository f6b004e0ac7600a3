"""merge-data's cross-part deduplication: seconds and memory per document, against the parts' encoding.

A synthetic source of `--documents` short documents (40 random words from a 20,000-word list, so that no two
are alike; in the last tenth, every 500th one a near copy of a document of the first tenth, changed by a word) is encoded in
`--parts` parts (`create-data --shard I/N`, as many machines would, one after the other here), then merge-data
runs `--repeat` times, each in a fresh process, replaying every part through
a new deduplication index. Per repeat: the merge's wall seconds per document, the CPU seconds of its main
process per document, the peak RSS of the merge and its index processes; the parts' encoding (wall seconds
per document, summed over the parts) gives the merge's cost as a share of making the parts. The documents
the merge drops across parts are counted: the planted copies that LSH finds (Jaccard 0.76 on word 5-grams: about
80 % of them with 14 bands of 8).
Run: python -m bench.merge [--documents 300000] [--parts 2] [--repeat 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import print_table, spread, spread_text, write_results

ROOT = Path(__file__).resolve().parents[1]


def write_source(path: Path, documents: int, parts: int) -> int:
	"""The synthetic JSON-lines source; returns the number of planted near copies."""
	rng = np.random.default_rng(0)
	words = np.array([f"mot{i}" for i in range(20_000)])
	texts = [" ".join(row) for row in words[rng.integers(0, len(words), size=(documents, 40))]]
	planted = 0
	tail = documents - documents // 10
	for i in range(tail, documents, 500):  # in the last tenth (the last part), copies of the first tenth (part 0)
		copy = texts[i - tail].split()
		copy[7] = "changé"
		texts[i] = " ".join(copy)
		planted += 1
	path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
	return planted


def run(command: list[str]) -> tuple[float, float]:
	"""Run a dimgpt command; (wall seconds, CPU seconds of its process tree's waited-for processes)."""
	before = resource.getrusage(resource.RUSAGE_CHILDREN)
	start = time.perf_counter()
	result = subprocess.run([sys.executable, "-m", "dimgpt", *command], cwd=ROOT, capture_output=True, text=True)
	wall = time.perf_counter() - start
	if result.returncode != 0:
		raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr}")
	after = resource.getrusage(resource.RUSAGE_CHILDREN)
	return wall, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def main() -> None:
	parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
	parser.add_argument("--documents", type=int, default=300_000)
	parser.add_argument("--parts", type=int, default=2)
	parser.add_argument("--repeat", type=int, default=3)
	parser.add_argument(
		"--keep", type=Path, help="build the parts in this folder and keep them (default: a temporary one)"
	)
	args = parser.parse_args()
	folder = args.keep or Path(tempfile.mkdtemp(prefix="bench-merge-"))
	shutil.rmtree(folder / "out", ignore_errors=True)
	folder.mkdir(parents=True, exist_ok=True)
	source = folder / "synthetic.jsonl"
	planted = write_source(source, args.documents, args.parts)
	out = folder / "out"
	common = ["--preset", "tiny", "--sources", f"synthetic={source}", "--instruct", "--out", str(out), "--no-progress"]
	common += ["--vocab-size", "2000", "--tokenizer-chars", "300000"]
	for rule in ("word_stats", "stop_words", "repetition", "symbols", "digits", "short_lines", "boilerplate"):
		common += ["--quality", f"{rule}=off"]  # random words are no prose: only the deduplication runs
	run(["create-data", *common, "--vocab-only"])
	encode = sum(run(["create-data", *common, "--shard", f"{i}/{args.parts}"])[0] for i in range(args.parts))
	walls, cpus, peaks = [], [], []
	for _ in range(args.repeat):
		command = [sys.executable, "-c", MERGE, str(out)]
		result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
		if result.returncode != 0:
			raise SystemExit(f"merge-data failed:\n{result.stderr}")
		record = json.loads(result.stdout.strip().splitlines()[-1])
		walls.append(record["wall"])
		cpus.append(record["cpu"])
		peaks.append(record["peak_mb"])
	manifest = json.loads((out / "pretrain" / "synthetic" / "source.json").read_text())
	n = args.documents
	per_doc = [1e6 * w / n for w in walls]
	rows = [
		["merge, wall", spread_text(per_doc, " us"), f"{spread(walls)['median']:.1f} s"],
		["merge, main process CPU", spread_text([1e6 * c / n for c in cpus], " us"), f"{spread(cpus)['median']:.1f} s"],
		["parts' encoding, wall (summed)", f"{1e6 * encode / n:.0f} us", f"{encode:.1f} s"],
		["merge / encoding", spread_text([w / encode for w in walls]), ""],
		["merge peak RSS (main + index)", spread_text(peaks, " MB"), ""],
	]
	print_table(
		f"merge-data, {n:,} documents in {args.parts} parts (per document)", ["", "per document", "total"], rows
	)
	print(
		f"dropped across parts: {manifest['merge']['dropped']} (planted near copies: {planted}); near duplicates in all: "
		f"{manifest['near_duplicates']}, documents kept: {manifest['documents']:,}"
	)
	write_results(
		"merge",
		{
			"documents": n,
			"parts": args.parts,
			"merge_wall_s": spread(walls),
			"merge_main_cpu_s": spread(cpus),
			"merge_us_per_document": spread(per_doc),
			"encode_wall_s": encode,
			"merge_peak_rss_mb": spread(peaks),
			"dropped_across_parts": manifest["merge"]["dropped"],
			"planted": planted,
			"near_duplicates": manifest["near_duplicates"],
		},
	)
	if args.keep is None:
		shutil.rmtree(folder, ignore_errors=True)


# the merge in a fresh process: its wall and main-process CPU seconds, and the peak RSS of it and its index processes
MERGE = """
import json, resource, sys, time
from dimgpt.data.merge import merge_data
start, cpu = time.perf_counter(), time.process_time()
merge_data(sys.argv[1], progress=False)
wall, cpu = time.perf_counter() - start, time.process_time() - cpu
try:  # this process's own peak: ru_maxrss would keep the benchmark's, from before the exec
	own = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
except (OSError, StopIteration):
	own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
peak = max(own, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
print(json.dumps({"wall": wall, "cpu": cpu, "peak_mb": peak / 1024}))
"""


if __name__ == "__main__":
	main()
