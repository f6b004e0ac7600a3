"""Tokenizer benchmark: cleaning and encoding speed, characters per token, vocabulary training.

Side by side in one run, on at least 5 MB of French text (../shared/data/corpus_fr; the embedded
corpus where it is absent):
  (a) the plain algorithm of docs/dimensiongpt.md (tests/tokenizer_oracle.py, the original code's approach),
  (b) ours (dimgpt.data.tokenizer) with its numba kernel, and (b') without numba (word cache),
  (c) a Hugging Face byte-level BPE of the same vocab size trained on the same text (`encode_batch`),
  (d) tiktoken built from (c)'s merges.
(a) and (b) run in worker processes that get the vocabulary once. Speeds are MB/s of UTF-8 text
(bytes); each side is called once untimed, then `--repeats` times in turn with the others (order
reversed every other repeat), and the tables give the median (min-max); (b)'s first call is reported
apart (it builds the trie, loads the compiled kernel and starts the workers), and so are the cold and
warmed word caches (one call each by nature). Vocabulary training (ours and (c)) runs in a child
process each, so its time and peak memory do not mix with the rest. Run: python -m bench.tokenizer [--mb 5] [--vocab 32000] [--repeats 3] [--no-full]
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing as mp
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.common import SHARED_DATA, alternate, print_table, spread, spread_text, write_results

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

PIECE = 100_000  # documents are cut into pieces of at most this many characters (balanced batches)


def load_text(chars: int | None, skip: int = 0) -> tuple[list[str], str]:
	"""Documents (pieces) of corpus_fr, files taken in turn, `chars` characters after `skip` (None: all)."""
	corpus = SHARED_DATA / "corpus_fr"
	if not corpus.is_dir():
		from dimgpt.data.corpus import embedded_documents

		docs = list(embedded_documents())
		while chars and sum(map(len, docs)) < chars + skip:
			docs = docs + docs
		source = "embedded corpus (corpus_fr absent)"
	else:
		readers = [
			(json.loads(line)["text"] for line in p.open(encoding="utf-8")) for p in sorted(corpus.glob("*.jsonl"))
		]
		docs = []
		while readers:  # round robin over the files so that a slice mixes novels, law and public-service text
			for reader in list(readers):
				doc = next(reader, None)
				if doc is None:
					readers.remove(reader)
				else:
					docs.append(doc)
		source = "corpus_fr"
	pieces = [d[i : i + PIECE] for d in docs for i in range(0, len(d), PIECE)]
	out, seen = [], 0
	for piece in pieces:
		if seen >= skip and (chars is None or seen < skip + chars):
			out.append(piece)
		seen += len(piece)
	return out, source


# --- (c) and (d)


def train_byte_bpe(texts: list[str], vocab_size: int):
	from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

	tokenizer = Tokenizer(models.BPE())
	tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
	tokenizer.decoder = decoders.ByteLevel()
	trainer = trainers.BpeTrainer(
		vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
	)
	tokenizer.train_from_iterator(texts, trainer=trainer, length=len(texts))
	return tokenizer


def tiktoken_from(hf_tokenizer):
	import tiktoken

	# GPT-2's byte <-> printable-character map, used by the byte-level pre-tokenizer.
	printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
	codes, n = printable[:], 0
	for b in range(256):
		if b not in printable:
			printable.append(b)
			codes.append(256 + n)
			n += 1
	to_byte = {chr(c): b for b, c in zip(printable, codes)}
	ranks = {bytes(to_byte[c] for c in token): rank for token, rank in hf_tokenizer.get_vocab().items()}
	pattern = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
	return tiktoken.Encoding("bench-bpe", pat_str=pattern, mergeable_ranks=ranks, special_tokens={})


# --- vocabulary training in a child process


def own_peak_mb() -> float:
	"""Peak resident memory of this process since it started (VmHWM; ru_maxrss survives exec on Linux)."""
	try:
		for line in Path("/proc/self/status").read_text().splitlines():
			if line.startswith("VmHWM:"):
				return int(line.split()[1]) / 1024
	except OSError:
		pass
	return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def train_child(which: str, chars: int | None, vocab_size: int) -> None:
	texts, _ = load_text(chars)
	start = time.perf_counter()
	if which == "ours":
		from dimgpt.data.tokenizer import Tokenizer

		Tokenizer.train(texts, vocab_size, progress=False).close()
	else:
		train_byte_bpe(texts, vocab_size)
	seconds = time.perf_counter() - start
	rss = own_peak_mb()
	children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
	print(json.dumps({"seconds": seconds, "peak_mb": rss, "worker_peak_mb": children, "chars": sum(map(len, texts))}))


def measure_training(which: str, chars: int | None, vocab_size: int) -> dict:
	arg = "all" if chars is None else str(chars)
	cmd = [sys.executable, "-m", "bench.tokenizer", "--train-child", which, arg, "--vocab", str(vocab_size)]
	out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)
	return json.loads(out.stdout.strip().splitlines()[-1])


def big_document_child(mb: int) -> None:
	from dimgpt.data.tokenizer import Tokenizer

	texts, _ = load_text(6_000_000)
	tokenizer = Tokenizer.train(texts, 8_000, progress=False)
	block = " ".join(texts)
	doc = (block * (mb * 1_000_000 // len(block) + 1))[: mb * 1_000_000]
	base = own_peak_mb()
	start = time.perf_counter()
	ids = tokenizer.encode_batch([doc])[0]
	seconds = time.perf_counter() - start
	rss = own_peak_mb()
	children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
	tokenizer.close()
	print(
		json.dumps(
			{"seconds": seconds, "tokens": len(ids), "peak_mb": rss, "before_mb": base, "worker_peak_mb": children}
		)
	)


# --- (a) in worker processes

_ORACLE_VOCAB: list[str] = []


def _oracle_init(vocab: list[str]) -> None:
	_ORACLE_VOCAB[:] = vocab


def _oracle_encode(text: str) -> list[int]:
	import tokenizer_oracle

	return tokenizer_oracle.encode(text, _ORACLE_VOCAB)


# --- the run


def main() -> None:
	parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
	parser.add_argument("--mb", type=float, default=5.0, help="millions of characters to encode and to train on")
	parser.add_argument("--repeats", type=int, default=3, help="alternated timed calls of each side (default: 3)")
	parser.add_argument("--vocab", type=int, default=32_000)
	parser.add_argument("--no-full", action="store_true", help="skip vocabulary training on the whole corpus")
	parser.add_argument(
		"--big-mb", type=int, default=100, help="millions of characters of the single-document test (0: skip)"
	)
	parser.add_argument("--train-child", nargs=2, metavar=("WHICH", "CHARS"), help=argparse.SUPPRESS)
	parser.add_argument("--big-child", type=int, help=argparse.SUPPRESS)
	args = parser.parse_args()
	if args.train_child:
		which, chars = args.train_child
		return train_child(which, None if chars == "all" else int(chars), args.vocab)
	if args.big_child:
		return big_document_child(args.big_child)

	import tokenizer_oracle

	from dimgpt.data.cleaning import clean
	from dimgpt.data.tokenizer import Tokenizer

	chars = int(args.mb * 1_000_000)
	texts, source = load_text(chars)
	held_out, _ = load_text(1_000_000, skip=chars)
	other, _ = load_text(chars, skip=chars + 1_000_000)  # warms the cache for the steady-state row
	mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6  # speeds are in MB/s of UTF-8 text (bytes)
	cores = os.cpu_count() or 1
	print(
		f"{mb:.2f} MB ({chars / 1e6:.2f} M characters) of {source} in {len(texts)} pieces, {cores} cores, vocab {args.vocab}"
	)

	ours = Tokenizer.train(texts, args.vocab, progress=False)
	byte_bpe = train_byte_bpe(texts, args.vocab)
	tik = tiktoken_from(byte_bpe)
	oracle = functools.partial(tokenizer_oracle.encode, vocab=ours.vocab)
	oracle_ids = [oracle(t) for t in texts[:20]]  # what ours must give on these (checked below)
	results: dict[str, dict[str, float]] = {}  # row -> median, min, max MB/s

	# (b) compiled: the first call builds the trie, loads the kernel and starts the workers, timed apart.
	compiled = {1: Tokenizer(ours.vocab, compiled=True), cores: Tokenizer(ours.vocab, compiled=True)}
	for workers, tokenizer in compiled.items():
		start = time.perf_counter()
		ids = tokenizer.encode_batch(texts, workers=workers)
		name = "b_single" if workers == 1 else "b_batched"
		results[f"{name}_first_call"] = spread([mb / (time.perf_counter() - start)])
		assert [x.tolist() for x in ids[:20]] == oracle_ids, "ours (compiled) and the oracle disagree"

	# The workers of (a) get the vocabulary once, as ours do (sending it with every task would slow (a) down).
	with mp.get_context("fork").Pool(cores, initializer=_oracle_init, initargs=(ours.vocab,)) as pool:
		sides = {
			"clean": lambda: [clean(t) for t in texts],
			"a_single": lambda: [oracle(t) for t in texts],
			"a_batched": lambda: pool.map(_oracle_encode, texts, chunksize=1),
			"b_single": functools.partial(compiled[1].encode_batch, texts, workers=1),
			"b_batched": functools.partial(compiled[cores].encode_batch, texts, workers=cores),
			"c_single": lambda: [byte_bpe.encode(t, add_special_tokens=False) for t in texts],
			"c_batched": lambda: byte_bpe.encode_batch(texts, add_special_tokens=False),
			"d_single": lambda: [tik.encode_ordinary(t) for t in texts],
			"d_batched": lambda: tik.encode_ordinary_batch(texts, num_threads=cores),
		}
		# Every side once per repeat, in turn (the order reversed every other repeat), after a first call each.
		times = alternate(sides, args.repeats)
	speeds = {name: [mb / t["wall"] for t in runs] for name, runs in times.items()}
	results.update({name: spread(v) for name, v in speeds.items()})
	for tokenizer in compiled.values():
		tokenizer.close()

	def word_cache(workers: int) -> float:
		"""(b') without numba: cold (empty cache, no worker pool: the first call pays for both)."""
		fresh = Tokenizer(ours.vocab, compiled=False)
		start = time.perf_counter()
		ids = fresh.encode_batch(texts, workers=workers)
		seconds = time.perf_counter() - start
		fresh.close()
		# Steady state of a long job: the cache (and pool) already hold what as much *other* text taught
		# them; the text measured is then partly seen, partly new, as in create_data after a while.
		warmed = Tokenizer(ours.vocab, compiled=False)
		warmed.encode_batch(other, workers=workers)
		start = time.perf_counter()
		warmed.encode_batch(texts, workers=workers)
		results[f"bw_{'single' if workers == 1 else 'batched'}_warm"] = spread([mb / (time.perf_counter() - start)])
		warmed.close()
		assert [x.tolist() for x in ids[:20]] == oracle_ids, "ours (word cache) and the oracle disagree"
		return mb / seconds

	# Cold and warmed caches are one call each by nature (a second call would find the cache warm).
	results["bw_single"] = spread([word_cache(1)])
	results["bw_batched"] = spread([word_cache(cores)])

	held_chars = sum(map(len, held_out))
	cpt = {
		"a": held_chars / sum(len(oracle(t)) for t in held_out),
		"b": held_chars / sum(len(x) for x in ours.encode_batch(held_out)),
		"c": held_chars / sum(len(e.ids) for e in byte_bpe.encode_batch(held_out, add_special_tokens=False)),
		"d": held_chars / sum(map(len, tik.encode_ordinary_batch(held_out))),
	}
	ours.close()

	def cell(name: str) -> str:  # median (min-max), or the one call's figure
		return spread_text(speeds.get(name) or [results[name]["median"]])

	def over_b(name: str) -> str:  # this side's speed / (b) batched's, repeat by repeat
		if name not in speeds:
			return f"{results[name]['median'] / results['b_batched']['median']:.2f}"
		return spread_text([x / y for x, y in zip(speeds[name], speeds["b_batched"])])

	rows = [
		["clean (ours)", cell("clean"), "", "", ""],
		["(a) plain algorithm, clean+encode", cell("a_single"), cell("a_batched"), over_b("a_batched"), cpt["a"]],
		[
			"(b) ours, compiled (numba), clean+encode",
			cell("b_single"),
			cell("b_batched"),
			over_b("b_batched"),
			cpt["b"],
		],
		[
			"(b) same, first call (+ trie, kernel, workers), 1 call",
			cell("b_single_first_call"),
			cell("b_batched_first_call"),
			over_b("b_batched_first_call"),
			"",
		],
		[
			"(b') ours without numba (word cache), cold, 1 call",
			cell("bw_single"),
			cell("bw_batched"),
			over_b("bw_batched"),
			"",
		],
		[
			"(b') same, cache warmed on other text, 1 call",
			cell("bw_single_warm"),
			cell("bw_batched_warm"),
			over_b("bw_batched_warm"),
			"",
		],
		["(c) HF byte-level BPE, encode", cell("c_single"), cell("c_batched"), over_b("c_batched"), cpt["c"]],
		["(d) tiktoken from (c), encode", cell("d_single"), cell("d_batched"), over_b("d_batched"), cpt["d"]],
	]
	print_table(
		f"speed on {mb:.2f} MB, MB/s of UTF-8 text: median (min-max) of {args.repeats} alternated repeats unless "
		"'1 call'; characters per token on 1 M characters held out",
		["", "1 process", f"{cores} cores", f"{cores} cores ÷ (b)", "chars/token"],
		rows,
	)

	def ratios(a: str, b: str) -> list[float]:
		return [x / y for x, y in zip(speeds[a], speeds[b])]

	targets = [
		["(b) batched ≥ 5× (a) batched", ratios("b_batched", "a_batched"), 5.0],
		["(b) batched ≥ 2× (c) batched", ratios("b_batched", "c_batched"), 2.0],
		["(b) batched vs (d) batched (aim)", ratios("b_batched", "d_batched"), 1.0],
	]
	print_table(
		"targets (ratios of the same repeat, median (min-max))",
		["target", "measured", "needed", ""],
		[
			[name, spread_text(v), need, "met" if statistics.median(v) >= need else "MISSED"]
			for name, v, need in targets
		],
	)

	# Each size: ours and (c) in turn, `--repeats` times at the sample's size (seconds each), once on the
	# whole corpus (minutes each); a child process each time.
	training: dict[str, list[dict]] = {}
	sizes = [(f"{chars / 1e6:g}M chars", chars, args.repeats)]
	sizes += [] if args.no_full else [("whole corpus", None, 1)]
	for label, size, repeats in sizes:
		for repeat in range(repeats):
			for which in ("ours", "c") if repeat % 2 == 0 else ("c", "ours"):
				training.setdefault(f"{which} {label}", []).append(measure_training(which, size, args.vocab))
	rows = [
		[
			f"{name} ({len(runs)} run{'s' if len(runs) > 1 else ''})",
			runs[0]["chars"] / 1e6,
			spread_text([r["seconds"] for r in runs]),
			spread_text([r["peak_mb"] for r in runs]),
			spread_text([r["worker_peak_mb"] for r in runs]),
		]
		for name, runs in training.items()
	]
	print_table(
		f"vocabulary training ({args.vocab} tokens), each run in a child process: median (min-max)",
		["", "M characters", "seconds", "peak MB", "its workers' peak MB"],
		rows,
	)
	for label, _, _ in sizes:
		ours, theirs = training[f"ours {label}"], training[f"c {label}"]
		ratios = [a["seconds"] / b["seconds"] for a, b in zip(ours, theirs)]
		peak = max(r["peak_mb"] + r["worker_peak_mb"] for r in ours)
		print(
			f"{label}: ours / (c) time = {spread_text(ratios)} (target ≤ 2: "
			f"{'met' if statistics.median(ratios) <= 2 else 'MISSED'}), ours peak ≤ {peak:,.0f} MB "
			f"(target ≤ 4,096: {'met' if peak <= 4096 else 'MISSED'})"
		)

	big = None
	if args.big_mb:
		cmd = [sys.executable, "-m", "bench.tokenizer", "--big-child", str(args.big_mb)]
		big = json.loads(
			subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
		)
		print(
			f"\none document of {args.big_mb}M characters, clean+encode on {cores} cores: {big['seconds']:.1f} s "
			f"({args.big_mb / big['seconds']:.1f}M characters/s), {big['tokens']:,} tokens, peak RSS {big['peak_mb']:,.0f} MB "
			f"(text and vocab alone: {big['before_mb']:,.0f} MB), workers' peak {big['worker_peak_mb']:,.0f} MB"
		)
	write_results(
		"tokenizer",
		{
			"mb": mb,
			"source": source,
			"vocab": args.vocab,
			"speed_mb_s": results,
			"speed_mb_s_runs": speeds,
			"repeats": args.repeats,
			"chars_per_token": cpt,
			"training": training,
			"big_document": big,
		},
	)


if __name__ == "__main__":
	main()
