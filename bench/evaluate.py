"""Evaluation speed: `dimgpt.evaluation.evaluate` vs a `transformers` loop computing the same likelihoods.

    .venv/bin/python -m bench.evaluate                          # tiny preset shape, random weights
    .venv/bin/python -m bench.evaluate --model runs/tiny/pretrain --repeat 7

Same text, same batches, one run. Texts: every other document of the embedded corpus and, when
../shared/data/corpus_fr is present, the first 50 documents of its law codes and of its
public-service pages plus the first 50,000 characters of 3 novels. Both sides encode the text with
our tokenizer and score every document with the same windows (context, stride) and the same batches:
- ours: `evaluate()` itself;
- theirs: the model written by `dimgpt.export` (MistralForCausalLM loaded with `from_pretrained`),
  in the loop a `transformers` user writes: the logits of every position, `log_softmax`, the scored
  targets' log-probabilities and argmax gathered. It gets our token ids and windows (`Scorer.batches`):
  the exported tokenizer does only part of our cleaning, and the same likelihoods need the same ids.
The two bits-per-byte figures must agree to 1e-4 (they compute the same thing) or the run fails.

Within each repeat the sides alternate (ours first on even repeats, theirs first on odd ones).
Rates are scored tokens per CPU-second of this process, with one torch thread by default: on a CPU
shared with other jobs, wall time measures the neighbours. Medians and min-max over the repeats; the
ratio is ours / theirs, its min-max over the repeats' own ratios.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import SHARED_DATA, print_table, spread_text, write_results
from dimgpt.data.corpus import embedded_documents
from dimgpt.data.tokenizer import START_OF_TEXT, Tokenizer
from dimgpt.evaluation import Scorer, evaluate, load_model_and_tokenizer
from dimgpt.model.transformer import Transformer
from dimgpt.presets import get_preset

TOLERANCE = 1e-4  # bits per byte


def texts() -> dict[str, list[str]]:
	"""The benchmark's documents by name (see the module doc)."""
	result = {"embedded": [d.strip() for d in embedded_documents()][::2]}
	corpus = SHARED_DATA / "corpus_fr"
	if corpus.is_dir():
		documents: list[str] = []
		for name, count, chars in (
			("legi_codes", 50, None),
			("service_public_fiches", 50, None),
			("eltec_fra_novels", 3, 50_000),
		):
			with open(corpus / f"{name}.jsonl", encoding="utf-8") as f:
				for line, _ in zip(f, range(count)):
					documents.append(json.loads(line)["text"][:chars].strip())
		result["corpus_fr"] = documents
	return result


def transformers_twin(model: Transformer, tokenizer: Tokenizer, directory: Path):
	"""Our model exported by dimgpt.export and loaded back by transformers."""
	from transformers import AutoModelForCausalLM

	from dimgpt.export import export_hf

	export_hf(model, directory, tokenizer=tokenizer)
	return AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32, attn_implementation="sdpa").eval()


@torch.inference_mode()
def transformers_loop(hf, scorer: Scorer, tokenizer: Tokenizer, documents: list[str]) -> tuple[float, int, int]:
	"""Summed NLL (nats), correct predictions and scored tokens, the usual transformers way over our windows."""
	sequences = [np.concatenate([[START_OF_TEXT], ids]).astype(np.int64) for ids in tokenizer.encode_batch(documents)]
	batches, _ = scorer.batches(sequences, [1] * len(sequences))
	nll, correct, count = 0.0, 0, 0
	for batch in batches:
		logprobs = torch.log_softmax(hf(input_ids=batch.tokens).logits.float(), dim=-1)
		scored = logprobs[batch.rows, batch.columns]
		nll -= float(scored.gather(1, batch.targets[:, None]).double().sum())
		correct += int((scored.argmax(-1) == batch.targets).sum())
		count += len(batch.targets)
	return nll, correct, count


def timed(fn):
	cpu, wall = time.process_time(), time.perf_counter()
	result = fn()
	return result, time.process_time() - cpu, time.perf_counter() - wall


def main() -> None:
	parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
	parser.add_argument("--model", help="weights to evaluate (default: the tiny preset's shape, random weights)")
	parser.add_argument("--vocab", help="its vocab.txt (default: found beside it)")
	parser.add_argument("--repeat", type=int, default=3, help="repeats of each side (default: 3)")
	parser.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
	parser.add_argument("--batch-size", type=int, help="windows per forward pass (default: evaluate's)")
	args = parser.parse_args()
	torch.set_num_threads(args.threads)
	corpora = texts()
	if args.model:
		model, tokenizer = load_model_and_tokenizer(args.model, args.vocab, "cpu")
	else:
		config = get_preset("tiny").model
		tokenizer = Tokenizer.train(corpora["embedded"], config.vocab_size, progress=False)
		torch.manual_seed(0)
		model = Transformer(config).eval()
	scorer = Scorer(model, batch_size=args.batch_size, progress=False)
	rows, record = [], {}
	with tempfile.TemporaryDirectory() as directory:
		hf = transformers_twin(model, tokenizer, Path(directory))
		for name, documents in corpora.items():
			nbytes = sum(len(d.encode("utf-8")) for d in documents)

			def ours(documents=documents):
				score = evaluate(model, documents, tokenizer=tokenizer, batch_size=scorer.batch_size, progress=False)
				return score.total.nll, score.total.correct, score.total.tokens

			def theirs(documents=documents):
				return transformers_loop(hf, scorer, tokenizer, documents)

			ours(documents[:3])  # warm-up: the tokenizer's kernel, first allocations
			theirs(documents[:3])
			rates: dict[str, list[float]] = {"ours": [], "theirs": []}
			walls: dict[str, list[float]] = {"ours": [], "theirs": []}
			results = {}
			for r in range(args.repeat):
				for side in ("ours", "theirs") if r % 2 == 0 else ("theirs", "ours"):
					result, cpu, wall = timed(ours if side == "ours" else theirs)
					results[side] = result
					rates[side].append(result[2] / cpu)
					walls[side].append(result[2] / wall)
			bpb = {side: results[side][0] / math.log(2) / nbytes for side in results}
			accuracy = {side: results[side][1] / results[side][2] for side in results}
			ratios = [a / b for a, b in zip(rates["ours"], rates["theirs"])]
			difference = abs(bpb["ours"] - bpb["theirs"])
			rows.append(
				[
					name,
					f"{len(documents):,}",
					f"{results['ours'][2]:,}",
					spread_text(rates["ours"]),
					spread_text(rates["theirs"]),
					spread_text(ratios),
					f"{bpb['ours']:.6f}",
					f"{bpb['theirs']:.6f}",
					f"{difference:.1e}",
				]
			)
			record[name] = {
				"documents": len(documents),
				"bytes": nbytes,
				"scored_tokens": results["ours"][2],
				"tokens_per_cpu_second": rates,
				"tokens_per_wall_second": walls,
				"ratio_median": statistics.median(ratios),
				"ratio_min": min(ratios),
				"ratio_max": max(ratios),
				"bits_per_byte": bpb,
				"accuracy": accuracy,
				"bits_per_byte_difference": difference,
			}
			# the same tokens scored; the argmax may differ where two logits tie within float error
			hits = abs(results["ours"][1] - results["theirs"][1])
			if difference > TOLERANCE or results["ours"][2] != results["theirs"][2] or hits > 1e-3 * results["ours"][2]:
				raise SystemExit(f"{name}: the two sides disagree: {record[name]}")
	print_table(
		f"evaluate: scored tokens per CPU-second, median (min-max) of {args.repeat}, {args.threads} thread(s); "
		f"context {scorer.context}, stride {scorer.stride}, batch {scorer.batch_size} windows",
		[
			"text",
			"documents",
			"tokens",
			"ours tok/s",
			"transformers tok/s",
			"ours / transformers",
			"bpb ours",
			"bpb transformers",
			"|difference|",
		],
		rows,
	)
	write_results(
		"evaluate",
		{
			"model": args.model or "tiny preset, random weights (seed 0)",
			"threads": args.threads,
			"repeat": args.repeat,
			"context": scorer.context,
			"stride": scorer.stride,
			"batch_size": scorer.batch_size,
			"texts": record,
		},
	)


if __name__ == "__main__":
	main()
