"""The document rules and MinHash shingles of dimgpt.data.quality written out plainly, rule by rule (slow and obvious).

tests/test_quality.py compares `dimgpt.data.quality` (one shared word split, whole-text counts, bounds that skip
sorts, chunked MinHash updates) with this on real documents. Only the word lists are shared; every rule, every
threshold and the shingle hash are written again here, literally: words are lists of strings, n-grams tuples.
"""

from __future__ import annotations

from collections import Counter

import xxhash
from datasketch import MinHash

from dimgpt.data.quality import BOILERPLATE, BULLETS, PUNCTUATION_END, STOP_WORDS


def word_stats(text: str) -> bool:
	words = text.split()
	if len(words) < 20:
		return True
	mean = sum(len(w) for w in words) / len(words)
	return mean < 3 or mean > 12


def stop_words(text: str) -> bool:
	found = {w for w in text[:20_000].lower().split() if w in STOP_WORDS}
	return len(found) < 2


def _repeats(parts: list[str]) -> bool:
	seen: set[str] = set()
	count = chars = 0
	for part in parts:
		if part in seen:
			count += 1
			chars += len(part)
		seen.add(part)
	return count / max(len(parts), 1) > 0.3 or chars / max(sum(len(p) for p in parts), 1) > 0.2


def repetition(text: str) -> bool:
	if _repeats([p for p in text.split("\n\n") if p.strip()]) or _repeats([p for p in text.split("\n") if p.strip()]):
		return True
	words = text.split()
	if len(words) < 2:
		return False
	total = sum(len(w) for w in words)
	ids: dict[str, int] = {}
	for w in words:  # word ids in order of first appearance
		ids.setdefault(w, len(ids))
	for n, limit in ((2, 0.20), (3, 0.18), (4, 0.16)):  # the most frequent n-gram's characters, all its occurrences
		counts = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
		if not counts:
			return False
		top = max(counts.values())
		# Among equally frequent n-grams (they may differ in length) the one taken is that of the smallest key, the
		# polynomial of its word ids modulo 2**64: an arbitrary but fixed choice, the one data.json counts were made with.
		gram = min((g for g, c in counts.items() if c == top), key=lambda g: _key([ids[w] for w in g]))
		if top > 1 and top * sum(map(len, gram)) / total > limit:
			return True
	for n, limit in ((5, 0.50), (7, 0.46), (10, 0.40)):  # the characters of words inside a repeated n-gram
		if len(words) < n:
			return False
		seen: set[tuple[str, ...]] = set()
		covered = [False] * len(words)
		for i in range(len(words) - n + 1):
			gram = tuple(words[i : i + n])
			if gram in seen:
				covered[i : i + n] = [True] * n
			seen.add(gram)
		if sum(len(w) for w, c in zip(words, covered) if c) / total > limit:
			return True
	return False


def _key(values: list[int]) -> int:
	key = 0
	for v in values:
		key = (key * 1_000_003 + v) % 2**64
	return key


def symbols(text: str) -> bool:
	words = text.split()
	marks = text.count("#") + text.count("...") + text.count("…")
	if marks / max(len(words), 1) > 0.1:
		return True
	lines = [line for line in text.splitlines() if line.strip() != ""]
	if lines:
		bulleted = sum(1 for line in lines if line.lstrip()[0] in BULLETS)
		if bulleted / len(lines) > 0.9:
			return True
		trailing = sum(1 for line in lines if line.rstrip().endswith("...") or line.rstrip().endswith("…"))
		if trailing / len(lines) > 0.3:
			return True
	sample = words[:5_000]
	without_letter = sum(1 for w in sample if w.upper() == w.lower())  # no letter: no case
	return without_letter / max(len(sample), 1) > 0.3


def digits(text: str) -> bool:
	return sum(1 for c in text if c in "0123456789") / max(len(text), 1) > 0.2


def short_lines(text: str) -> bool:
	lines = [line.strip() for line in text.splitlines() if line.strip() != ""]
	if len(lines) < 3:
		return False
	short = sum(1 for line in lines if len(line) < 30)
	ended = sum(1 for line in lines if line[-1] in PUNCTUATION_END)
	return short / len(lines) > 0.67 and ended / len(lines) < 0.12


def boilerplate(text: str) -> bool:
	lower = text.lower()
	if "lorem ipsum" in lower:
		return True
	lines = [line for line in lower.splitlines() if line.strip() != ""]
	flagged = sum(1 for line in lines if any(phrase in line for phrase in BOILERPLATE))
	return flagged > 0 and flagged / len(lines) > 0.2


RULES = {
	"word_stats": word_stats,
	"stop_words": stop_words,
	"repetition": repetition,
	"symbols": symbols,
	"digits": digits,
	"short_lines": short_lines,
	"boilerplate": boilerplate,
}


def shingles(text: str) -> set[int]:
	"""The set of 32-bit hashes of the lowercased word 5-grams (one gram of all the words if fewer)."""
	words = text.lower().split()
	if not words:
		return {xxhash.xxh32_intdigest(text.encode())}
	n = min(5, len(words))
	hashes = set()
	for i in range(len(words) - n + 1):
		gram = words[i : i + n]  # the polynomial of the words' xxh32, modulo 2**64, cut to 32 bits
		hashes.add(_key([xxhash.xxh32_intdigest(w.encode()) for w in gram]) & 0xFFFFFFFF)
	return hashes


def minhash(text: str, num_perm: int) -> MinHash:
	"""datasketch's MinHash (affine32, seed 1) of the shingle set, in one update."""
	signature = MinHash(num_perm=num_perm, seed=1, hashfunc=int, scheme="affine32")
	signature.update_batch(sorted(shingles(text)))
	return signature
