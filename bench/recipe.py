"""Training recipes: DimensionGPT's (AdamW, cosine) against the newer one (Muon, warmup-stable-decay).

The same model, the same data (corpus_fr with the tiny preset's tokenizer), the project's own
Trainer steps; only the recipe changes. Each size runs
  dg        DimensionGPT's recipe (AdamW, cosine) for the full budget of --steps steps
  new       the newer recipe (the tiny preset's: Muon + AdamW, WSD) for 1/2 and 1/3 of the budget,
            each a complete run (its decay at its own end)
for --seeds seeds each, all runs side by side (one process each, one thread each, interleaved
orders). Time is the CPU time of the run's own process (the machine is shared: wall time would
measure the neighbours), counted over training steps only; validation is outside it. Being CPU time,
it does not depend on the process's priority: the benchmark can run under `nice` on a busy machine.

Validation: bits per byte on fixed batches of corpus_fr's validation split: the summed negative
log-likelihood in bits over the UTF-8 bytes of the target tokens (control tokens, which stand for no
text, are not scored), so the figure does not depend on the tokenizer.

The target: the new recipe reaches the DG recipe's final bits per byte in ≤ 0.5× its CPU time
(moonshot ≤ 0.33×); the table also gives the tokens it took, against DG's. Writes bench/results/recipe.json and resources/recipe.png.
Run: python -m bench.recipe [--steps 80 80] [--seeds 2] [--sizes tiny 384x6] [--jobs 4]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import multiprocessing as mp
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.common import SHARED_DATA, print_table, skip, spread_text, write_results

ROOT = Path(__file__).resolve().parents[1]
VAL_BATCHES = 4
EVALS = 4  # validation points per run, besides the start


def sizes() -> dict[str, Any]:
	from dimgpt.presets import get_preset

	tiny = get_preset("tiny").model
	return {
		"tiny": tiny,
		"256x4": replace(tiny, dim=256, n_layers=4, n_heads=4, n_kv_heads=2, hidden_dim=0),
		"384x6": replace(tiny, dim=384, n_layers=6, n_heads=6, n_kv_heads=2, hidden_dim=0),
	}


def recipes() -> dict[str, Any]:
	"""The two recipes at tiny's scale: DimensionGPT's (AdamW, cosine) and the tiny preset's (the new one)."""
	from dimgpt.presets import TINY_DIMENSIONGPT_TRAIN, get_preset

	return {"dg": TINY_DIMENSIONGPT_TRAIN, "new": get_preset("tiny").train}


def ensure_dataset(path: Path) -> Path:
	"""A corpus_fr dataset with the tiny preset's tokenizer (built once, ~1 min)."""
	if (path / "data.json").exists():
		return path
	from dimgpt.data.create import create_data
	from dimgpt.presets import corpus_fr_sources, get_preset

	pretrain, _ = corpus_fr_sources(SHARED_DATA)
	config = replace(get_preset("tiny").data, sources=pretrain, instruct_sources=())
	create_data(config, path, progress=False)
	return path


def token_bytes(vocab: list[str]):
	"""UTF-8 bytes each token stands for: its text; tab and newline 1; other control tokens 0."""
	import torch

	from dimgpt.data.tokenizer import CONTROL_TOKENS, NEW_LINE, TAB

	sizes = [0 if i < len(CONTROL_TOKENS) else len(t.encode("utf-8")) for i, t in enumerate(vocab)]
	sizes[TAB] = sizes[NEW_LINE] = 1
	return torch.tensor(sizes, dtype=torch.float64)


def bits_per_byte(model, batches, nbytes) -> float:
	import torch
	import torch.nn.functional as F

	model.eval()
	bits = total = 0.0
	with torch.no_grad():
		for x, y, _ in batches:
			losses = F.cross_entropy(model(x).float().flatten(0, 1), y.flatten(), reduction="none").double()
			weight = nbytes[y.flatten()]
			bits += float((losses * (weight > 0)).sum()) / math.log(2)
			total += float(weight.sum())
	model.train()
	return bits / total


def run(job: dict[str, Any]) -> dict[str, Any]:
	"""One training run in this (child) process; its curve of (step, tokens, cpu_s, bpb)."""
	import torch

	torch.set_num_threads(1)
	from dimgpt.data.loader import PretrainLoader
	from dimgpt.data.tokenizer import Tokenizer
	from dimgpt.training.trainer import Trainer

	model_config = sizes()[job["size"]]
	steps = job["steps"]
	base = recipes()[job["recipe"]]
	config = replace(
		base,
		seed=job["seed"],
		max_steps=steps,
		decay_steps=steps,
		warmup_steps=min(base.warmup_steps, steps // 10),
		cooldown_steps=0,  # WSD: the last 20 % of the run
		eval_every=0,
		eval_batches=0,
		checkpoint_every=0,
	)
	config = replace(config, **job.get("set", {}))  # a variation under test (tuning)
	data = Path(job["data"])
	nbytes = token_bytes(Tokenizer.load(data / "vocab.txt").vocab)
	# the same validation windows whatever batch size a variation trains with
	val = PretrainLoader(data, "validation", base.batch_size, model_config.context_length, seed=1234)
	val_batches = [val.next_batch() for _ in range(VAL_BATCHES)]
	val.close()
	train = PretrainLoader(data, "train", config.batch_size, model_config.context_length, seed=job["seed"])
	trainer = Trainer(model_config, config, Path(job["run_dir"]), train, progress=False)
	points = sorted({round(steps * k / EVALS) for k in range(1, EVALS + 1)})
	curve = [{"step": 0, "tokens": 0, "cpu_s": 0.0, "bpb": bits_per_byte(trainer.model, val_batches, nbytes)}]
	cpu = 0.0
	while trainer.step < steps:
		start = time.process_time()
		out = trainer.train_step()
		cpu += time.process_time() - start
		trainer.step += 1
		trainer.tokens += trainer.tokens_per_step
		if not out["finite"]:
			raise RuntimeError(f"{job}: non-finite loss at step {trainer.step}")
		if trainer.step in points:
			bpb = bits_per_byte(trainer.model, val_batches, nbytes)
			curve.append({"step": trainer.step, "tokens": trainer.tokens, "cpu_s": cpu, "bpb": bpb})
	trainer.close()
	return {**job, "curve": curve, "final_bpb": curve[-1]["bpb"], "cpu_s": cpu, "tokens": trainer.tokens}


def to_reach(curve: list[dict[str, float]], target: float, key: str = "cpu_s") -> float | None:
	"""`key` (CPU seconds or tokens) at which the curve first reaches `target` bpb (linear between validation points)."""
	for a, b in itertools.pairwise(curve):
		if b["bpb"] <= target:
			if a["bpb"] <= target:
				return a[key]
			return a[key] + (a["bpb"] - target) / (a["bpb"] - b["bpb"]) * (b[key] - a[key])
	return None


def summarise(results: list[dict[str, Any]], size_names: list[str]) -> tuple[list[list[Any]], dict[str, Any]]:
	rows, summary = [], {}
	for size in size_names:
		runs = [r for r in results if r["size"] == size]
		dg = [r for r in runs if r["recipe"] == "dg"]
		target = statistics.median(r["final_bpb"] for r in dg)
		dg_cpu = statistics.median(r["cpu_s"] for r in dg)
		dg_tokens = statistics.median(r["tokens"] for r in dg)
		summary[size] = {"dg_final_bpb": target, "dg_cpu_s": dg_cpu, "dg_tokens": dg_tokens, "runs": {}}
		for key in sorted({(r["recipe"], r["steps"]) for r in runs}, key=lambda k: (k[0] != "dg", -k[1])):
			group = [r for r in runs if (r["recipe"], r["steps"]) == key]
			reach = [to_reach(r["curve"], target) for r in group]
			ratios = [c / dg_cpu for c in reach if c is not None]
			token_ratios = [t / dg_tokens for r in group if (t := to_reach(r["curve"], target, "tokens")) is not None]
			label = f"{key[0]} {key[1]} steps"
			summary[size]["runs"][label] = {
				"final_bpb": [r["final_bpb"] for r in group],
				"cpu_s": [r["cpu_s"] for r in group],
				"tokens": group[0]["tokens"],
				"cpu_to_reach_dg_final": reach,
				"cpu_ratio_to_reach": ratios,
				"token_ratio_to_reach": token_ratios,
			}
			rows.append(
				[
					size,
					label,
					f"{group[0]['tokens']:,}",
					spread_text([r["cpu_s"] for r in group], fmt="{:.0f}"),
					spread_text([r["final_bpb"] for r in group], fmt="{:.3f}"),
					f"{sum(c is not None for c in reach)}/{len(group)}",
					spread_text(ratios, fmt="{:.2f}") if key[0] != "dg" else "1 (reference)",
					spread_text(token_ratios, fmt="{:.2f}") if key[0] != "dg" else "1 (reference)",
				]
			)
	return rows, summary


def plot(results: list[dict[str, Any]], size_names: list[str], path: Path) -> None:
	import matplotlib

	matplotlib.use("Agg")
	import matplotlib.pyplot as plt

	fig, axes = plt.subplots(len(size_names), 2, figsize=(11, 4 * len(size_names)), squeeze=False)
	colours = {"dg": "tab:blue", "new": "tab:red"}
	dashes = ["-", "-.", ":", (0, (5, 2, 1, 2, 1, 2))]  # the new recipe's budgets, longest first
	for row, size in enumerate(size_names):
		budgets = sorted({r["steps"] for r in results if r["size"] == size and r["recipe"] != "dg"}, reverse=True)
		for r in (r for r in results if r["size"] == size):
			label = (
				f"{'DimensionGPT (AdamW, cosine)' if r['recipe'] == 'dg' else 'new (Muon, WSD)'}, {r['steps']} steps"
			)
			style = "--" if r["recipe"] == "dg" else dashes[budgets.index(r["steps"]) % len(dashes)]
			for col, key in enumerate(("cpu_s", "tokens")):
				axis = axes[row][col]
				curve = r["curve"][1:]
				axis.plot(
					[p[key] for p in curve],
					[p["bpb"] for p in curve],
					linestyle=style,
					color=colours[r["recipe"]],
					marker="o",
					markersize=3,
					label=label if r["seed"] == 0 else None,
				)
		target = statistics.median(r["final_bpb"] for r in results if r["size"] == size and r["recipe"] == "dg")
		for col, xlabel in enumerate(("CPU seconds (training steps, one thread)", "training tokens")):
			axis = axes[row][col]
			axis.axhline(target, color="grey", linewidth=0.8, label="DimensionGPT's final (median)")
			axis.set_title(f"{size}: validation bits per byte")
			axis.set_xlabel(xlabel)
			axis.set_ylabel("bits per byte")
			axis.grid(alpha=0.3)
			axis.legend(fontsize=8)
	fig.tight_layout()
	path.parent.mkdir(parents=True, exist_ok=True)
	fig.savefig(path, dpi=110)
	print(f"plot written to {path}")


def main() -> None:
	parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
	parser.add_argument("--steps", type=int, nargs="+", default=[80, 80], help="DG's budget in steps, one per size")
	parser.add_argument("--sizes", nargs="+", default=["tiny", "384x6"], choices=sorted(sizes()))
	parser.add_argument("--seeds", type=int, default=2)
	parser.add_argument(
		"--fractions", type=float, nargs="+", default=[1 / 2, 2 / 5, 1 / 3], help="the new recipe's budgets"
	)
	parser.add_argument("--jobs", type=int, default=4, help="runs at once (one thread each)")
	parser.add_argument(
		"--data", type=Path, default=ROOT / "data" / "bench-recipe", help="dataset folder (built if absent)"
	)
	parser.add_argument("--plot", type=Path, default=ROOT / "resources" / "recipe.png")
	parser.add_argument("--name", default="recipe", help="name of the JSON in bench/results")
	parser.add_argument(
		"--from-json",
		type=Path,
		nargs="+",
		help="redo the table and plot from results JSONs of this script (runs of several sizes merged)",
	)
	args = parser.parse_args()
	if args.from_json:
		records = [json.loads(path.read_text())["results"] for path in args.from_json]
		budgets = {size: steps for r in records for size, steps in r["budgets"].items()}
		args.sizes = [s for s in sizes() if s in budgets]
		args.seeds = min(r["seeds"] for r in records)
		return report([run for r in records for run in r["runs"]], args, budgets)
	if not (SHARED_DATA / "corpus_fr").is_dir():
		skip(f"this benchmark needs the French corpus at {SHARED_DATA / 'corpus_fr'}")
	data = ensure_dataset(args.data)
	budgets = dict(zip(args.sizes, args.steps + args.steps[-1:] * len(args.sizes)))
	jobs = []
	for size in args.sizes:
		for seed in range(args.seeds):
			plans = [("dg", budgets[size])] + [("new", round(budgets[size] * f)) for f in args.fractions]
			for recipe, steps in plans if seed % 2 == 0 else reversed(plans):  # alternate who starts first
				run_dir = f"/tmp/bench-recipe-{size}-{recipe}-{steps}-{seed}-{time.time_ns()}"
				jobs.append(
					{
						"size": size,
						"recipe": recipe,
						"steps": steps,
						"seed": seed,
						"data": str(data),
						"run_dir": run_dir,
					}
				)
	print(f"{len(jobs)} runs, {args.jobs} at a time, on {data}")
	start = time.perf_counter()
	results = []
	with mp.get_context("spawn").Pool(args.jobs, maxtasksperchild=1) as pool:
		for result in pool.imap_unordered(run, jobs):
			results.append(result)
			print(
				f"  {result['size']} {result['recipe']} {result['steps']} steps seed {result['seed']}: "
				f"bpb {result['final_bpb']:.3f}, {result['cpu_s']:.0f} CPU s ({time.perf_counter() - start:.0f} s wall so far)",
				flush=True,
			)
	# the runs first, so that a failure below loses no measurement (--from-json redoes the rest)
	write_results(args.name, {"budgets": budgets, "seeds": args.seeds, "runs": results})
	report(results, args, budgets)
	print(f"wall {time.perf_counter() - start:.0f} s")


def report(results: list[dict[str, Any]], args: argparse.Namespace, budgets: dict[str, int]) -> None:
	"""The table, the plot and the JSON with the summary."""
	rows, summary = summarise(results, args.sizes)
	print_table(
		f"recipes on corpus_fr, {args.seeds} seeds (median, min-max); target: new reaches DG's final bpb in ≤ 0.5× its CPU time",
		[
			"size",
			"recipe",
			"tokens",
			"CPU s",
			"final bpb",
			"reached DG's final",
			"CPU to reach ÷ DG's",
			"tokens to reach ÷ DG's",
		],
		rows,
	)
	plot(results, args.sizes, args.plot)
	write_results(args.name, {"budgets": budgets, "seeds": args.seeds, "summary": summary, "runs": results})


if __name__ == "__main__":
	main()
