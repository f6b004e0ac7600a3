"""The main job, end to end on the configured sources (by default the embedded corpus).

For now: clean the corpus, train the preset's tokenizer (or reuse the one already in the run
directory), then encode and decode a sample to show the round trip.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path

from dimgpt.config import get_preset
from dimgpt.data.cleaning import clean
from dimgpt.data.corpus import embedded_corpus_info, embedded_documents
from dimgpt.data.tokenizer import Tokenizer


def _sample(chars: int) -> list[str]:
	"""Embedded documents up to about `chars` characters."""
	out, total = [], 0
	for doc in embedded_documents():
		if total >= chars:
			break
		out.append(doc)
		total += len(doc)
	return out


def run_main_job(preset: str, run_dir: str | Path) -> None:
	"""Run the main job of `preset` into `run_dir`."""
	config = get_preset(preset)
	run_dir = Path(run_dir)
	run_dir.mkdir(parents=True, exist_ok=True)
	info = embedded_corpus_info()
	print(
		f"corpus: {info['name']} ({info['documents']} documents, {info['characters']:,} characters, {info['licence']})"
	)

	vocab_path = run_dir / "vocab.txt"
	if vocab_path.exists():
		tokenizer = Tokenizer.load(vocab_path)
		if tokenizer.vocab_size != config.data.vocab_size:
			raise ValueError(
				f"{vocab_path} has {tokenizer.vocab_size} tokens but preset {preset!r} wants {config.data.vocab_size}: "
				"delete it or use another run directory"
			)
		print(f"tokenizer: reusing {vocab_path} ({tokenizer.vocab_size} tokens, fingerprint {tokenizer.fingerprint})")
	else:
		start = time.perf_counter()
		tokenizer = Tokenizer.train(
			_sample(config.data.tokenizer_chars),
			config.data.vocab_size,
			max_token_length=config.data.max_token_length,
			forced_tokens=config.data.forced_tokens,
		)
		tokenizer.save(vocab_path)
		print(
			f"tokenizer: trained {tokenizer.vocab_size} tokens in {time.perf_counter() - start:.1f} s -> {vocab_path}"
		)

	documents = list(embedded_documents())
	ids = tokenizer.encode_batch(documents)
	tokens = sum(len(x) for x in ids)
	chars = sum(len(clean(d)) for d in documents)
	print(f"encoded the corpus: {tokens:,} tokens, {chars / max(tokens, 1):.2f} characters per token")

	sample = " ".join(itertools.islice(embedded_documents(), 1))[:300]
	sample_ids = tokenizer.encode(sample)
	decoded = tokenizer.decode(sample_ids)
	print(f"sample ({len(sample_ids)} tokens): {sample_ids[:24]} ...")
	print("decoded:", decoded)
	if decoded != clean(sample):
		raise RuntimeError("decode(encode(text)) differs from the cleaned text: the tokenizer is broken")
	tokenizer.close()
