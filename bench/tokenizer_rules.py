"""Tokenizer rules: how many tokens the DimensionGPT rules give, against BPE alternatives, on held-out text.

Every tokenizer has the same vocabulary size and learns from the same text: the sample that
`create-data` draws from ../shared/data/corpus_fr for the tiny preset (5M characters). They are then
measured on corpus_fr's validation split (the documents `create-data` holds out), cleaned as the
project cleans text, so every tokenizer sees the same characters:
  dg          ours: the DimensionGPT word split, vocabulary rules, greedy longest match (the default)
  bpe-words   the same word split (a space glued to the next word), but BPE merges and no DG rules
              (tokens may end in a space, hold several digits): HF `tokenizers` BPE
  bpe-spans   spaces join words, as SentencePiece-style BPE without a whitespace split does: a
              pre-token is a run of letters and single spaces (several words), tokens ≤ 16 characters
  byte-bpe    a byte-level BPE with GPT-2's split (HF `tokenizers` ByteLevel), as bench.tokenizer (c)
Reported: tokens, characters and UTF-8 bytes per token, tokens against dg, the share of dg tokens
that are only whitespace, and encoding speed in one process (median and min-max of 3 runs,
alternating the tokenizers). The rule to build an option: ≥ 10 % fewer tokens than dg at an
encoding speed no lower than dg's. Run: python -m bench.tokenizer_rules [--vocab 4096 32000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("RAYON_NUM_THREADS", "1")  # HF tokenizers in one thread, as ours in one process

from bench.common import SHARED_DATA, print_table, skip, write_results

REPEATS = 3


def corpus_config(vocab_size: int):
	from dimgpt.presets import corpus_fr_sources, get_preset

	pretrain, _ = corpus_fr_sources(SHARED_DATA)
	return replace(get_preset("tiny").data, sources=pretrain, instruct_sources=(), vocab_size=vocab_size)


def validation_texts(config, cache: Path) -> list[str]:
	"""The cleaned documents `create-data` holds out for validation, every source in turn."""
	from dimgpt.data.cleaning import clean
	from dimgpt.data.sources import documents
	from dimgpt.data.store import held_out, validation_count

	texts = []
	for source in config.sources:
		docs = list(documents(source, min_chars=config.min_document_chars, cache_dir=cache))
		held = validation_count(len(docs), config.validation_fraction, config.min_validation_documents)
		texts += [clean(d) for i, d in enumerate(docs) if held_out(i, len(docs), held)]
	return [t for t in texts if t]


def train_hf(lines: list[str], vocab_size: int, kind: str):
	"""A HF BPE of `vocab_size` tokens (10 of them set aside, as dg's control tokens) on `lines`."""
	from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

	from dimgpt.data.cleaning import AUTHORISED
	from dimgpt.data.tokenizer import MAX_TOKEN_LENGTH, WORD_PATTERN

	size = vocab_size - 10
	if kind == "byte-bpe":
		tokenizer = Tokenizer(models.BPE())
		tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
		tokenizer.decoder = decoders.ByteLevel()
		alphabet = pre_tokenizers.ByteLevel.alphabet()
	else:
		tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
		pattern = WORD_PATTERN if kind == "bpe-words" else r" ?[\p{L} ]*\p{L}| ?[0-9]+| ?[^ 0-9\p{L}]+| +"
		tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
			[
				pre_tokenizers.Split(Regex("[\t\n]"), behavior="isolated"),
				pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
			]
		)
		alphabet = sorted(AUTHORISED)
	trainer = trainers.BpeTrainer(
		vocab_size=size,
		initial_alphabet=alphabet,
		max_token_length=MAX_TOKEN_LENGTH,
		special_tokens=[] if kind == "byte-bpe" else ["<unk>"],
		show_progress=False,
	)
	tokenizer.train_from_iterator(lines, trainer=trainer, length=len(lines))
	return tokenizer


def measure(vocab_size: int, work: Path) -> dict:
	from dimgpt.data.create import train_tokenizer

	config = corpus_config(vocab_size)
	out = work / f"vocab{vocab_size}"
	start = time.perf_counter()
	ours = train_tokenizer(config, out, progress=False)
	trained = {"dg": time.perf_counter() - start}
	lines = (out / "tokenizer_sample.txt").read_text(encoding="utf-8").splitlines()
	texts = validation_texts(config, work / "hf_cache")
	chars = sum(map(len, texts))
	utf8 = sum(len(t.encode("utf-8")) for t in texts)
	print(
		f"vocab {vocab_size}: trained on {sum(map(len, lines)):,} characters; validation {len(texts)} documents, {chars:,} characters"
	)

	hf = {}
	for kind in ("bpe-words", "bpe-spans", "byte-bpe"):
		start = time.perf_counter()
		hf[kind] = train_hf(lines, vocab_size, kind)
		trained[kind] = time.perf_counter() - start

	def encoders():
		yield "dg", lambda: [len(x) for x in ours.encode_batch(texts, clean=False, workers=1)]
		for kind, tokenizer in hf.items():
			yield kind, lambda t=tokenizer: [len(e.ids) for e in t.encode_batch(texts, add_special_tokens=False)]

	counts: dict[str, int] = {}
	seconds: dict[str, list[float]] = {name: [] for name, _ in encoders()}
	for repeat in range(REPEATS + 1):  # the first round warms up (trie, kernel, caches) and is not timed
		order = list(encoders())
		for name, encode in order if repeat % 2 else reversed(order):
			start = time.perf_counter()
			counts[name] = sum(encode())
			if repeat:
				seconds[name].append(time.perf_counter() - start)
	ids = ours.encode_batch(texts, clean=False, workers=1)
	whitespace = {i for i, t in enumerate(ours.vocab) if i >= 10 and not t.strip()}
	space_share = sum(int(sum(x in whitespace for x in doc.tolist())) for doc in ids) / counts["dg"]
	ours.close()
	rows = {}
	for name in seconds:
		speed = [chars / 1e6 / s for s in seconds[name]]
		rows[name] = {
			"tokens": counts[name],
			"chars_per_token": chars / counts[name],
			"bytes_per_token": utf8 / counts[name],
			"tokens_vs_dg": counts[name] / counts["dg"],
			"mb_s_median": statistics.median(speed),
			"mb_s_min": min(speed),
			"mb_s_max": max(speed),
			"training_seconds": trained[name],
		}
	for r in rows.values():
		r["speed_vs_dg"] = r["mb_s_median"] / rows["dg"]["mb_s_median"]
		r["qualifies"] = r["tokens_vs_dg"] <= 0.9 and r["speed_vs_dg"] >= 1.0
	print_table(
		f"vocab {vocab_size}: corpus_fr validation ({chars / 1e6:.2f} M characters, {utf8 / 1e6:.2f} MB), "
		f"{REPEATS} runs; dg tokens that are only whitespace: {space_share:.1%}",
		[
			"",
			"tokens",
			"chars/token",
			"bytes/token",
			"tokens ÷ dg",
			"M chars/s median (min-max)",
			"speed ÷ dg",
			"≥10 % fewer at ≥ dg speed",
		],
		[
			[
				name,
				f"{r['tokens']:,}",
				r["chars_per_token"],
				r["bytes_per_token"],
				f"{r['tokens_vs_dg']:.3f}",
				f"{r['mb_s_median']:.2f} ({r['mb_s_min']:.2f}-{r['mb_s_max']:.2f})",
				f"{r['speed_vs_dg']:.2f}",
				"yes" if r["qualifies"] else "no",
			]
			for name, r in rows.items()
		],
	)
	return {"validation_chars": chars, "validation_bytes": utf8, "dg_whitespace_share": space_share, "tokenizers": rows}


def main() -> None:
	parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
	parser.add_argument("--vocab", type=int, nargs="+", default=[4_096, 32_000])
	parser.add_argument("--work", type=Path, help="folder for the vocabularies and samples (default: a temporary one)")
	args = parser.parse_args()
	if not (SHARED_DATA / "corpus_fr").is_dir():
		skip(f"this benchmark needs the French corpus at {SHARED_DATA / 'corpus_fr'}")
	with tempfile.TemporaryDirectory() as tmp:
		work = args.work or Path(tmp)
		results = {str(v): measure(v, work) for v in args.vocab}
	write_results("tokenizer_rules", results)


if __name__ == "__main__":
	main()
