"""Generation speed: our KV-cache sampler vs full recomputation vs transformers' Mistral, and memory.

    .venv/bin/python -m bench.generation --threads 1            # tiny preset and the dimensiongpt-0.2b shape
    .venv/bin/python -m bench.generation --threads 1 --quick    # tiny preset only

Rates are tokens per CPU-second (wall rates are printed too): on a CPU shared with other jobs, wall
time measures the neighbours, and torch's threads stall on each other at every small kernel, so one
thread gives the stable comparison. Each repeat runs every side once, in an order reversed every other
repeat, after an untimed warm-up; the tables give the median (min-max) over `--repeats` repeats, and a
ratio is taken within each repeat before its median.

Random weights, float32 on the CPU (bfloat16 on a GPU), batch 1, a 16-token prompt, greedy:
(a) `Sampler` with its KV cache; (b) `Sampler(use_cache=False)`, the whole sequence re-run for every
token as the release did; (c) `transformers.MistralForCausalLM` holding the same weights (the
exported layout) and its `generate` with its own cache. The three must produce the same tokens.
Forward throughput: one forward of batch 8 x 512 tokens, ours vs (c). Memory: peak RSS growth of a
fresh process while (a) generates N tokens, for a short and a long N: flat when the cache rolls.
For the 0.2b shape on a CPU, (b) runs 64 new tokens instead of 256 (its cost per token grows with
the length, so this flatters (b)) and the long memory run is 1,024 tokens instead of 4,096.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time

import psutil
import torch
import torch.nn.functional as F

from bench.common import alternate, mistral_config, print_table, spread, spread_text, write_results
from dimgpt.config import ModelConfig
from dimgpt.device import inference_dtype, pick_device
from dimgpt.model.transformer import Transformer
from dimgpt.presets import get_preset
from dimgpt.sampling import Sampler, SamplingConfig

PROMPT_TOKENS = 16
NEW_TOKENS = 256


def rates(runs: list[dict], tokens: int) -> dict:
	"""Tokens per CPU-second and per wall second of each repeat, and their median (min-max)."""
	cpu, wall = [tokens / r["cpu"] for r in runs], [tokens / r["wall"] for r in runs]
	return {"tokens_per_cpu_s": spread(cpu), "tokens_per_wall_s": spread(wall), "per_repeat_cpu": cpu}


def ratio(ours: dict, theirs: dict) -> dict:
	"""Median (min-max) of ours/theirs CPU rates, taken repeat by repeat (both met the same moment)."""
	return spread([a / b for a, b in zip(ours["per_repeat_cpu"], theirs["per_repeat_cpu"])])


def hf_twin(model: Transformer):
	"""transformers' MistralForCausalLM computing what `model` computes (same weights, exported layout)."""
	from transformers import MistralForCausalLM

	from dimgpt.export import hf_state_dict

	hf = MistralForCausalLM(mistral_config(model.config))
	state = hf_state_dict(model.state_dict(), model.config)
	hf.load_state_dict(state, strict=False)
	hf.tie_weights()
	return hf.to(model.token_embedding.weight.device, model.token_embedding.weight.dtype).eval()


def generation_rates(model: Transformer, hf, device: torch.device, b_tokens: int, repeats: int) -> dict:
	sampler = Sampler(model)
	prompt = [
		2,
		*torch.randint(
			10, model.config.vocab_size, (PROMPT_TOKENS - 1,), generator=torch.Generator().manual_seed(0)
		).tolist(),
	]
	ids = torch.tensor([prompt], device=device)
	counts = {"a": NEW_TOKENS, "b": b_tokens, "c": NEW_TOKENS}
	outputs = {}

	def ours(n: int = NEW_TOKENS) -> None:
		greedy = SamplingConfig(temperature=0, repetition_penalty=0.0, max_new_tokens=n)
		outputs["a"] = sampler.generate_ids([prompt], greedy, stop_ids=())[0]

	def recompute(n: int = b_tokens) -> None:
		short = SamplingConfig(temperature=0, repetition_penalty=0.0, max_new_tokens=n)
		outputs["b"] = sampler.generate_ids([prompt], short, stop_ids=(), use_cache=False)[0]

	@torch.no_grad()
	def theirs(n: int = NEW_TOKENS) -> None:
		out = hf.generate(
			ids,
			attention_mask=torch.ones_like(ids),
			max_new_tokens=n,
			min_new_tokens=n,
			do_sample=False,
			pad_token_id=1,
			eos_token_id=None,
			bad_words_ids=[[i] for i in range(10)],  # as our sampler: no control tokens
		)
		outputs["c"] = out[0, len(prompt) :].tolist()

	for warm_up in (ours, recompute, theirs):
		warm_up(8)  # a short untimed run of each side: first-call allocations and lazy initialisation
	runs = alternate({"a": ours, "b": recompute, "c": theirs}, repeats, warm_up=False)
	out = {k: rates(v, counts[k]) for k, v in runs.items()}
	out["a_over_b"], out["a_over_c"] = ratio(out["a"], out["b"]), ratio(out["a"], out["c"])
	same_b = outputs["b"] == outputs["a"][:b_tokens]
	agree = sum(x == y for x, y in zip(outputs["a"], outputs["c"]))
	return {**out, "repeats": repeats, "b_new_tokens": b_tokens, "a_equals_b_tokens": same_b, "a_c_same_tokens": agree}


@torch.no_grad()
def forward_rates(model: Transformer, hf, device: torch.device, repeats: int) -> dict:
	tokens = torch.randint(10, model.config.vocab_size, (8, 512), device=device)
	runs = alternate({"ours": lambda: model(tokens), "hf": lambda: hf(tokens, use_cache=False).logits}, repeats)
	out = {k: rates(v, tokens.numel()) for k, v in runs.items()}
	return {**out, "ours_over_hf": ratio(out["ours"], out["hf"]), "repeats": repeats}


def gqa_choice(config: ModelConfig) -> dict[str, list[float]]:
	"""SDPA at the forward's shape: keys repeated per query head vs `enable_gqa=True` (wall ms, 5 repeats)."""
	B, T, H, Hkv, D = 8, 512, config.n_heads, config.n_kv_heads, config.head_dim
	q, k, v = torch.randn(B, H, T, D), torch.randn(B, Hkv, T, D), torch.randn(B, Hkv, T, D)
	positions = torch.arange(T)
	distance = positions[:, None] - positions[None, :]
	mask = (distance >= 0) & (distance <= config.window)

	def repeated():
		g = H // Hkv
		F.scaled_dot_product_attention(q, k.repeat_interleave(g, 1), v.repeat_interleave(g, 1), attn_mask=mask)

	def enable_gqa():
		F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)

	runs = alternate({"repeat_interleave": repeated, "enable_gqa": enable_gqa}, 5)
	return {f"{k}_ms": [r["wall"] * 1e3 for r in v] for k, v in runs.items()}


def memory_child(preset: str, new_tokens: int) -> None:
	"""Run in a fresh process: RSS growth (sampled every 5 ms) while (a) generates `new_tokens` tokens."""
	torch.manual_seed(0)
	model = Transformer(get_preset(preset).model).eval()
	sampler = Sampler(model)
	prompt = list(range(10, 10 + PROMPT_TOKENS))
	sampler.generate_ids([prompt], SamplingConfig(temperature=0, max_new_tokens=8), stop_ids=())  # warm up
	process = psutil.Process()
	base = process.memory_info().rss
	peak = [base]
	running = True

	def watch():
		while running:
			peak[0] = max(peak[0], process.memory_info().rss)
			time.sleep(0.005)

	thread = threading.Thread(target=watch)
	thread.start()
	start = time.perf_counter()
	settings = SamplingConfig(temperature=0, repetition_penalty=1.0, max_new_tokens=new_tokens)
	sampler.generate_ids([prompt], settings, stop_ids=())
	seconds = time.perf_counter() - start
	running = False
	thread.join()
	cache_bytes = model.make_cache(1).memory_bytes()
	print(json.dumps({"growth_mb": (peak[0] - base) / 2**20, "cache_mb": cache_bytes / 2**20, "seconds": seconds}))


def memory_run(preset: str, new_tokens: int) -> dict:
	command = [sys.executable, "-m", "bench.generation", "--memory-child", preset, str(new_tokens)]
	command += ["--threads", str(torch.get_num_threads())]
	out = subprocess.run(command, capture_output=True, text=True, check=True, env={**os.environ})
	return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
	parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
	parser.add_argument("--quick", action="store_true", help="tiny preset only")
	parser.add_argument("--memory-only", action="store_true", help="only the memory runs")
	parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
	parser.add_argument(
		"--repeats", type=int, default=5, help="alternating repeats per model (default 5; 3 for 0.2b on a CPU)"
	)
	parser.add_argument("--memory-child", nargs=2, metavar=("PRESET", "TOKENS"), help=argparse.SUPPRESS)
	args = parser.parse_args()
	if args.threads:
		# On a CPU shared with other jobs, small per-token kernels stall on thread synchronisation
		# (measured here: tiny preset decode 350 tokens/s on 1 thread, 20 on 2 under load).
		torch.set_num_threads(args.threads)
	if args.memory_child:
		memory_child(args.memory_child[0], int(args.memory_child[1]))
		return

	device = pick_device()
	dtype = inference_dtype(device)
	presets = ["tiny"] if args.quick else ["tiny", "dimensiongpt-0.2b"]
	results: dict = {"device": str(device), "dtype": str(dtype), "threads": torch.get_num_threads()}
	gen_rows, fwd_rows, mem_rows = [], [], []
	for name in presets:
		if args.memory_only:
			for n in (512, 4096) if name == "tiny" else (256, 1024):
				m = memory_run(name, n)
				results.setdefault(name, {})[f"memory_{n}"] = m
				mem_rows.append([name, n, m["growth_mb"], m["cache_mb"], n / m["seconds"]])
			continue
		torch.manual_seed(0)
		model = Transformer(get_preset(name).model).to(device, dtype).eval()
		hf = hf_twin(model)
		big = name != "tiny" and device.type == "cpu"
		b_tokens = 64 if big else NEW_TOKENS
		repeats = min(args.repeats, 3) if big else args.repeats
		gen = generation_rates(model, hf, device, b_tokens, repeats)
		fwd = forward_rates(model, hf, device, repeats)
		results[name] = {"generation": gen, "forward": fwd}
		wall = " / ".join(f"{gen[k]['tokens_per_wall_s']['median']:.3g}" for k in "abc")
		same = f"{gen['a_equals_b_tokens']} / {gen['a_c_same_tokens']}/{NEW_TOKENS}"
		a, b, c = (gen[k]["per_repeat_cpu"] for k in "abc")
		a_b = [x / y for x, y in zip(a, b)]
		a_c = [x / y for x, y in zip(a, c)]
		gen_rows.append(
			[
				name,
				repeats,
				spread_text(a),
				f"{spread_text(b)} ({b_tokens} tok)",
				spread_text(c),
				spread_text(a_b, "x"),
				spread_text(a_c, "x"),
				wall,
				same,
			]
		)
		ours, theirs = fwd["ours"]["per_repeat_cpu"], fwd["hf"]["per_repeat_cpu"]
		wall = f"{fwd['ours']['tokens_per_wall_s']['median']:.3g} / {fwd['hf']['tokens_per_wall_s']['median']:.3g}"
		fwd_rows.append(
			[
				name,
				repeats,
				spread_text(ours),
				spread_text(theirs),
				spread_text([x / y for x, y in zip(ours, theirs)], "x"),
				wall,
			]
		)
		del model, hf
		if device.type == "cpu":
			short, long = (512, 4096) if name == "tiny" else (256, 1024)
			for n in (short, long):
				m = memory_run(name, n)
				results[name][f"memory_{n}"] = m
				mem_rows.append([name, n, m["growth_mb"], m["cache_mb"], n / m["seconds"]])

	if args.memory_only:
		print_table(
			"Memory of (a): RSS growth of a fresh process during generation",
			["model", "new tokens", "RSS growth MB", "KV cache MB", "tokens/s"],
			mem_rows,
		)
		write_results("generation", results)
		return
	threads = torch.get_num_threads()
	print_table(
		f"Generation, batch 1, {PROMPT_TOKENS}-token prompt, {NEW_TOKENS} new tokens, greedy "
		f"({device}, {dtype}, {threads} thread(s)), tokens per CPU-second, median (min-max) over repeats",
		[
			"model",
			"repeats",
			"(a) ours",
			"(b) recompute",
			"(c) HF Mistral",
			"a/b",
			"a/c",
			"wall tok/s a / b / c (medians)",
			"same a=b / a~c",
		],
		gen_rows,
	)
	print_table(
		"Forward, batch 8 x 512 tokens, tokens per CPU-second, median (min-max) over repeats",
		["model", "repeats", "ours", "HF Mistral", "ours/HF", "wall tok/s ours / HF (medians)"],
		fwd_rows,
	)
	if mem_rows:
		print_table(
			"Memory of (a): RSS growth of a fresh process during generation",
			["model", "new tokens", "RSS growth MB", "KV cache MB", "tokens/s"],
			mem_rows,
		)
	gqa = gqa_choice(get_preset(presets[-1]).model)
	results["gqa_sdpa"] = {k: spread(v) for k, v in gqa.items()}
	print_table(
		f"SDPA with a window mask, batch 8 x 512, {presets[-1]} heads: GQA strategy, wall ms, median (min-max) of 5",
		["repeat_interleave ms", "enable_gqa ms"],
		[[spread_text(gqa["repeat_interleave_ms"]), spread_text(gqa["enable_gqa_ms"])]],
	)
	write_results("generation", results)


if __name__ == "__main__":
	main()
