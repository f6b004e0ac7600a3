"""Document filters and MinHash signing: CPU per GB of text, before and after the speed-up, side by side.

On ../shared/data/corpus_fr (all of it by default), in this one process and one thread, each document as a
create-data worker takes it (stripped): the rules (`rejection`, all switched on), then for a kept document its
MinHash (112 permutations). Two sides, alternated (before, after, after, before, ...) `--repeat` times:
  before: dimgpt/data/quality.py as of `--before` (a git revision, read with `git show`; default the last
          version before the shared split), called with the text;
  after:  this checkout's quality.py, one `Document` per text shared by the rules and the signature.
Per stage: MB/s of UTF-8 (all the documents' bytes over that stage's CPU seconds of this process, as bench.data
counts a worker's stages) and CPU seconds per GB; medians and min-max over the repeats. Both sides must agree:
every document's rule and every signature are compared (the run stops if they differ).
Run: python -m bench.quality [--repeat 3] [--mb 0 (all)] [--before REV]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

import numpy as np

from bench.common import SHARED_DATA, print_table, skip, spread_text, write_results

ROOT = Path(__file__).resolve().parents[1]
BEFORE = "2306373"  # main just before quality.py's shared split (its filters and signatures are the same)
PERMUTATIONS = 112  # QualityConfig.dedup_permutations


def load_documents(megabytes: float) -> list[str]:
	"""corpus_fr's documents, stripped, files in turn; the first `megabytes` MB of UTF-8 (0: all)."""
	corpus = SHARED_DATA / "corpus_fr"
	if not corpus.is_dir():
		skip(f"the French corpus is not at {corpus}")
	texts, size = [], 0
	for path in sorted(corpus.glob("*.jsonl")):
		for line in path.open(encoding="utf-8"):
			texts.append(json.loads(line)["text"].strip())
			size += len(texts[-1].encode())
			if megabytes and size >= megabytes * 1e6:
				return texts
	return texts


def module_at(revision: str) -> ModuleType | None:
	"""dimgpt/data/quality.py as of `revision`, imported apart (None where git or the revision is missing)."""
	try:
		source = subprocess.run(
			["git", "show", f"{revision}:dimgpt/data/quality.py"], cwd=ROOT, capture_output=True, text=True, check=True
		).stdout
	except (OSError, subprocess.CalledProcessError):
		return None
	path = Path(tempfile.mkdtemp()) / "quality_before.py"
	path.write_text(source, encoding="utf-8")
	spec = importlib.util.spec_from_file_location("quality_before", path)
	module = importlib.util.module_from_spec(spec)
	spec.loader.exec_module(module)
	return module


def run(module: ModuleType, texts: list[str], shared: bool) -> tuple[dict[str, float], list, list]:
	"""CPU seconds of the rules and of the signatures over `texts`; each document's rule and signature."""
	from dimgpt.config import QualityConfig

	rules = QualityConfig()
	seconds = {"filter": 0.0, "sign": 0.0}
	decisions, signatures = [], []
	clock = time.process_time
	for text in texts:
		start = clock()
		document = module.Document(text) if shared else text
		rule = module.rejection(document, rules)
		middle = clock()
		seconds["filter"] += middle - start
		decisions.append(rule)
		if rule is None:
			signatures.append(module.minhash(document, PERMUTATIONS).hashvalues)
			seconds["sign"] += clock() - middle
	return seconds, decisions, signatures


def main() -> None:
	parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
	parser.add_argument("--repeat", type=int, default=3, help="runs of each side, alternated")
	parser.add_argument("--mb", type=float, default=0, help="MB of UTF-8 text from corpus_fr (0: all)")
	parser.add_argument("--before", default=BEFORE, help="git revision of the 'before' side")
	args = parser.parse_args()

	from dimgpt.data import quality

	texts = load_documents(args.mb)
	megabytes = sum(len(t.encode()) for t in texts) / 1e6
	before = module_at(args.before)
	sides = {"after": (quality, True)}
	if before is None:
		print(f"git revision {args.before} not found: measuring this checkout's quality.py alone")
	else:
		sides = {"before": (before, False), **sides}
	load = os.getloadavg()
	print(f"{megabytes:.1f} MB of UTF-8 in {len(texts)} documents of corpus_fr; load average {load[0]:.2f}")
	times: dict[str, list[dict[str, float]]] = {name: [] for name in sides}
	outputs = {}
	for r in range(args.repeat):
		order = list(sides) if r % 2 == 0 else list(reversed(sides))
		for name in order:
			module, shared = sides[name]
			seconds, decisions, signatures = run(module, texts, shared)
			times[name].append(seconds)
			outputs.setdefault(name, (decisions, signatures))
			print(f"  {name}: filter {seconds['filter']:.2f} CPU s, sign {seconds['sign']:.2f} CPU s", flush=True)
	if before is not None:
		(rules_a, sigs_a), (rules_b, sigs_b) = outputs["before"], outputs["after"]
		assert rules_a == rules_b, "the rules decide differently before and after"
		assert len(sigs_a) == len(sigs_b) and all(map(np.array_equal, sigs_a, sigs_b)), "the signatures differ"
		print(f"same decisions ({sum(r is not None for r in rules_a)} dropped) and {len(sigs_a)} same signatures")

	rows, results = [], {"megabytes": megabytes, "documents": len(texts), "load_start": load[0], "sides": {}}
	for name in sides:
		stages = {}
		for stage in ("filter", "sign", "total"):
			secs = [s["filter"] + s["sign"] if stage == "total" else s[stage] for s in times[name]]
			rates = [megabytes / s for s in secs]
			per_gb = [s / (megabytes / 1e3) for s in secs]
			rows.append([name, stage, spread_text(rates), spread_text(per_gb)])
			stages[stage] = {"seconds": secs, "mb_per_s_median": statistics.median(rates), "cpu_s_per_gb": per_gb}
		results["sides"][name] = stages
	if before is not None:
		for stage in ("filter", "sign", "total"):
			ratio = [
				(b["filter"] + b["sign"] if stage == "total" else b[stage])
				/ (a["filter"] + a["sign"] if stage == "total" else a[stage])
				for b, a in zip(times["before"], times["after"])
			]
			rows.append(["before/after", stage, spread_text(ratio), ""])
			results[f"speedup_{stage}"] = ratio
	results["load_end"] = os.getloadavg()[0]
	print_table(
		f"CPU of this process, {args.repeat} alternated runs per side (median (min-max)); load "
		f"{load[0]:.2f} -> {results['load_end']:.2f}",
		["side", "stage", "MB/s of UTF-8", "CPU s/GB"],
		rows,
	)
	write_results("quality", results)


if __name__ == "__main__":
	sys.exit(main())
