"""Training benchmark and learning check.

`python -m bench.training` : training tokens/s (forward + backward + clipping + AdamW) of our trainer
step vs Hugging Face `MistralForCausalLM` with the equivalent config (same batch, context, precision,
optimizer), for the `tiny` preset and a 4-layer slice of `dimensiongpt-0.2b`, each measured in its
own process for its peak RSS, and both in one process alternating step by step (the order reversed
every other step) for tokens/s: median (min-max) over `--steps` steps, the ratio taken step pair by
step pair.

`python -m bench.training --learning 600` : the `tiny` preset trained for 600 s on ../shared/data/corpus_fr;
final validation loss, bits per character, and the loss curve copied to resources/.

`python -m bench.training --gpu` : dimensiongpt-0.2b at context 512, bf16, batch 16 on a CUDA GPU, with
and without torch.compile: tokens/s, MFU, peak memory, and the time the release's 52.4B tokens would take.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from bench.common import (
	SHARED_DATA,
	alternate,
	mistral_config,
	peak_rss_mb,
	print_table,
	spread,
	spread_text,
	write_results,
)
from dimgpt.config import ModelConfig
from dimgpt.presets import get_preset

ROOT = Path(__file__).resolve().parents[1]
CASES = {
	"tiny": (get_preset("tiny").model, 16),
	"0.2b-4-layers": (replace(get_preset("dimensiongpt-0.2b").model, n_layers=4), 2),
}


class RandomTokens:
	"""Fixed-seed random token batches, no padding (the same for both models)."""

	def __init__(self, config: ModelConfig, batch_size: int) -> None:
		self.generator = torch.Generator().manual_seed(0)
		self.shape, self.vocab = (batch_size, config.context_length + 1), config.vocab_size
		self.position = 0

	def next_batch(self):
		window = torch.randint(0, self.vocab, self.shape, generator=self.generator)
		return window[:, :-1], window[:, 1:], torch.ones(window[:, 1:].shape)

	def state_dict(self) -> dict:
		return {}

	def load_state_dict(self, state: dict) -> None:
		pass


def ours_step(config: ModelConfig, batch_size: int, work: Path, device: torch.device, compile: bool = False):
	from dimgpt.training.distributed import Distributed
	from dimgpt.training.trainer import Trainer

	train = replace(get_preset("dimensiongpt-0.2b").train, batch_size=batch_size, grad_accum=1, compile=compile)
	trainer = Trainer(
		config, train, work, RandomTokens(config, batch_size), env=Distributed(device=device), progress=False
	)
	return trainer.train_step


def mistral_step(config: ModelConfig, batch_size: int, device: torch.device):
	from transformers import MistralForCausalLM

	from dimgpt.training.optim import make_optimizer

	hf = mistral_config(config)
	torch.manual_seed(0)
	model = MistralForCausalLM(hf).to(device).train()
	train = get_preset("dimensiongpt-0.2b").train
	optimizer = make_optimizer(model, train, device)
	tokens = RandomTokens(config, batch_size)

	def step() -> None:
		x = tokens.next_batch()[0].to(device)
		loss = model(input_ids=x, labels=x).loss
		loss.backward()
		torch.nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip)
		optimizer.step()
		optimizer.zero_grad(set_to_none=True)
		loss.item()

	return step


def worker(which: str, case: str, steps: int, threads: int) -> None:
	"""Measure in this process and print a JSON line: one model (its peak RSS), or `both`
	alternating step by step, so that both meet the same machine noise (tokens/s of every step)."""
	import tempfile

	torch.set_num_threads(threads)
	config, batch_size = CASES[case]
	device = torch.device("cpu")
	names = ["ours", "mistral"] if which == "both" else [which]
	with tempfile.TemporaryDirectory() as work:
		make = {
			"ours": lambda: ours_step(config, batch_size, Path(work), device),
			"mistral": lambda: mistral_step(config, batch_size, device),
		}
		runs = alternate({name: make[name]() for name in names}, steps)  # one warm-up step each first
	tokens = batch_size * config.context_length
	out = {name: [tokens / r["wall"] for r in times] for name, times in runs.items()}
	print(json.dumps({"tokens_per_second": out, "peak_rss_mb": peak_rss_mb()}))


def run_worker(which: str, case: str, steps: int, threads: int) -> dict:
	args = [
		sys.executable,
		"-m",
		"bench.training",
		"--worker",
		which,
		case,
		"--steps",
		str(steps),
		"--threads",
		str(threads),
	]
	out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=True).stdout
	return json.loads(out.strip().splitlines()[-1])


def throughput(steps: int, threads: int, cases: list[str]) -> dict:
	rows, results = [], {}
	for case in cases:
		config, batch_size = CASES[case]
		per_step = run_worker("both", case, steps, threads)["tokens_per_second"]
		rss = {which: run_worker(which, case, 1, threads)["peak_rss_mb"] for which in ("ours", "mistral")}
		ratios = [a / b for a, b in zip(per_step["ours"], per_step["mistral"])]
		speed = {name: spread(values) for name, values in per_step.items()}
		results[case] = {
			"batch": batch_size,
			"context": config.context_length,
			"steps": steps,
			"tokens_per_second": speed,
			"tokens_per_second_per_step": per_step,
			"peak_rss_mb": rss,
			"ratio": spread(ratios),
		}
		rows.append(
			[
				case,
				f"{batch_size}x{config.context_length}",
				spread_text(per_step["ours"]),
				spread_text(per_step["mistral"]),
				spread_text(ratios, "x"),
				rss["ours"],
				rss["mistral"],
			]
		)
	print_table(
		f"training tokens/s on CPU, fp32, {threads} thread(s), fwd+bwd+clip+AdamW, wall time, "
		f"median (min-max) of {steps} alternating steps",
		["model", "batch", "ours tok/s", "Mistral tok/s", "ours/Mistral", "ours RSS MB", "Mistral RSS MB"],
		rows,
	)
	return results


def learning(seconds: float, work: Path) -> dict:
	"""Train `tiny` on the French corpus for `seconds`; validation loss and bits per character."""
	from dimgpt.data.create import create_data
	from dimgpt.data.loader import PretrainLoader
	from dimgpt.data.tokenizer import Tokenizer
	from dimgpt.presets import corpus_fr_sources
	from dimgpt.training.build import train

	preset = get_preset("tiny")
	pretrain, _ = corpus_fr_sources(SHARED_DATA)
	data = work / "data"
	if not (data / "data.json").exists():
		create_data(replace(preset.data, sources=pretrain, instruct_sources=()), data)
	run = work / "run"
	shutil.rmtree(run, ignore_errors=True)
	result = train(preset, data, run, max_seconds=seconds, max_steps=None)
	# Bits per character: nats per token / ln 2 × tokens per character, on the same validation batches.
	tokenizer = Tokenizer.load(data / "vocab.txt")
	loader = PretrainLoader(
		data, "validation", preset.train.batch_size, preset.model.context_length, seed=preset.train.seed
	)
	tokens = chars = 0
	for _ in range(preset.train.eval_batches):
		_, y, w = loader.next_batch()
		for row, weights in zip(y.tolist(), w.tolist()):
			kept = [t for t, weight in zip(row, weights) if weight > 0]
			tokens += len(kept)
			chars += len(tokenizer.decode(kept))
	loader.close()
	bpc = result.val_loss / math.log(2) * tokens / chars
	image = ROOT / "resources" / "tiny-corpus-fr-loss.png"
	image.parent.mkdir(exist_ok=True)
	shutil.copyfile(run / "loss.png", image)
	shutil.copyfile(run / "accuracy.png", image.with_name("tiny-corpus-fr-accuracy.png"))
	last = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
	train_last = [r for r in last if "loss" in r][-1]
	out = {
		"seconds": seconds,
		"steps": result.step,
		"tokens": result.tokens,
		"val_loss": result.val_loss,
		"val_accuracy": [r for r in last if "val_loss" in r][-1]["val_accuracy"],
		"train_loss_smooth": train_last["loss_smooth"],
		"chars_per_token": chars / tokens,
		"bits_per_char": bpc,
	}
	print_table(
		f"learning check: tiny preset, {seconds:.0f} s on corpus_fr",
		list(out),
		[[round(v, 4) if isinstance(v, float) else v for v in out.values()]],
	)
	print(f"loss curve: {image}")
	return out


def gpu(batch_size: int = 16, steps: int = 10) -> dict:
	"""dimensiongpt-0.2b in bf16 on the GPU, eager and compiled."""
	import tempfile

	from dimgpt.training.metrics import flops_per_token, peak_flops

	device = torch.device("cuda")
	config = get_preset("dimensiongpt-0.2b").model
	out, rows = {}, []
	for compiled in (False, True):
		torch.cuda.reset_peak_memory_stats()
		with tempfile.TemporaryDirectory() as work:
			step = ours_step(config, batch_size, Path(work), device, compile=compiled)
			for _ in range(3):
				step()
			torch.cuda.synchronize()
			start = time.perf_counter()
			for _ in range(steps):
				step()
			torch.cuda.synchronize()
			speed = steps * batch_size * config.context_length / (time.perf_counter() - start)
		peak = peak_flops(device)
		mfu = speed * flops_per_token(config) / peak if peak else float("nan")
		memory = torch.cuda.max_memory_allocated() / 2**30
		hours = 52.4e9 / speed / 3600
		out["compile" if compiled else "eager"] = {
			"tokens_per_second": speed,
			"mfu": mfu,
			"peak_gib": memory,
			"hours_52b": hours,
		}
		rows.append(["compile" if compiled else "eager", speed, f"{mfu:.1%}", memory, hours])
	print_table(
		f"dimensiongpt-0.2b, bf16, batch {batch_size}x512 on {torch.cuda.get_device_name()}",
		["mode", "tok/s", "MFU", "peak GiB", "hours for 52.4B tokens"],
		rows,
	)
	return out


def main() -> None:
	parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
	parser.add_argument("--worker", nargs=2, metavar=("WHICH", "CASE"), help=argparse.SUPPRESS)
	parser.add_argument("--steps", type=int, default=7, help="alternating steps measured per model")
	parser.add_argument("--threads", type=int, default=torch.get_num_threads())
	parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES), help="models to measure")
	parser.add_argument("--learning", type=float, metavar="SECONDS", help="run the learning check for SECONDS")
	parser.add_argument("--work", default=str(ROOT / "runs" / "bench-training"), help="learning check's data and run")
	parser.add_argument("--gpu", action="store_true", help="the GPU measurement of dimensiongpt-0.2b")
	args = parser.parse_args()
	if args.worker:
		worker(*args.worker, args.steps, args.threads)
	elif args.learning:
		write_results("training_learning", learning(args.learning, Path(args.work)))
	elif args.gpu:
		write_results("training_gpu", gpu())
	else:
		write_results("training", throughput(args.steps, args.threads, args.cases))


if __name__ == "__main__":
	main()
