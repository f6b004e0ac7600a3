"""Small helpers shared by the benchmarks: timing, peak memory, the ratio table and the JSON record."""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SKIPPED = 77  # exit status of a benchmark that cannot run on this machine (python -m bench reports it)


def skip(reason: str) -> None:
	"""Stop a benchmark that needs what this machine lacks (a GPU, the French corpus), saying why."""
	print(f"skipped: {reason}", file=sys.stderr)
	raise SystemExit(SKIPPED)


def alternate(sides: dict[str, Callable[[], Any]], repeats: int, warm_up: bool = True) -> dict[str, list[dict]]:
	"""Time each side once per repeat, side by side, the order reversed every other repeat so that no side
	always runs first (or always right after another) on a machine whose load moves.

	Returns {side: [{"cpu": CPU seconds of this process, "wall": wall seconds}, ... one per repeat]}.
	`warm_up` runs each side once untimed first (first-call allocations, lazy initialisation).
	"""
	if warm_up:
		for fn in sides.values():
			fn()
	times: dict[str, list[dict]] = {name: [] for name in sides}
	order = list(sides)
	for repeat in range(repeats):
		for name in order if repeat % 2 == 0 else order[::-1]:
			cpu, wall = time.process_time(), time.perf_counter()
			sides[name]()
			times[name].append({"cpu": time.process_time() - cpu, "wall": time.perf_counter() - wall})
	return times


def spread(values: Sequence[float]) -> dict[str, float]:
	"""Median, min and max of repeated measurements: what the tables and the JSON report (never a best-of,
	which hides how much a shared machine moved the figures)."""
	return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def spread_text(values: Sequence[float], suffix: str = "", fmt: str | None = None) -> str:
	"""`median (min-max)` of `values`, for a table cell: one value alone as itself, none as "-". `fmt` (a
	format string, e.g. "{:.3f}") where 3 significant digits are too few."""
	if not values:
		return "-"
	text = fmt.format if fmt else _fmt
	s = spread(values)
	if len(values) == 1:
		return f"{text(s['median'])}{suffix}"
	return f"{text(s['median'])}{suffix} ({text(s['min'])}-{text(s['max'])})"


def peak_rss_mb() -> float:
	"""Peak resident memory of this process so far, in MB."""
	return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
	"""Print rows as an aligned text table."""
	cells = [[_fmt(c) for c in row] for row in rows]
	widths = [max(len(str(h)), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]
	print(f"\n{title}")
	print("  ".join(str(h).ljust(w) for h, w in zip(header, widths)))
	print("  ".join("-" * w for w in widths))
	for row in cells:
		print("  ".join(c.ljust(w) for c, w in zip(row, widths)))


def _fmt(value: Any) -> str:
	if isinstance(value, float):
		return f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"
	return str(value)


def write_results(name: str, results: dict[str, Any]) -> Path:
	"""Write `results` with a note of the machine to bench/results/NAME.json and return the path."""
	RESULTS.mkdir(parents=True, exist_ok=True)
	record = {
		"benchmark": name,
		"time": time.strftime("%Y-%m-%dT%H:%M:%S"),
		"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0]},
		"results": results,
	}
	path = RESULTS / f"{name}.json"
	path.write_text(json.dumps(record, indent=2) + "\n")
	print(f"\nresults written to {path}")
	return path


def mistral_config(config):
	"""transformers' MistralConfig computing what `Transformer(config)` computes (the export's mapping)."""
	from transformers import MistralConfig

	from dimgpt.export import hf_config

	fields = {k: v for k, v in hf_config(config).items() if k not in ("architectures", "model_type")}
	return MistralConfig(**fields, attn_implementation="sdpa")
