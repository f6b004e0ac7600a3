"""Document quality: filters of the Gopher / C4 / FineWeb kind tuned for French, and MinHash signatures.

`rejection(text, config)` names the first rule a document fails (None: kept). The rules and their
thresholds follow Gopher (Rae et al. 2021, MassiveText quality filters), C4 (Raffel et al. 2020) and
FineWeb (Penedo et al. 2024), with the word lists in French; they were checked against the four French
sources of ../shared/data/corpus_fr (novels, 19th-century prose, legal codes, public-service pages),
where each drops at most a few documents (bench/data.py prints the counts):

- word_stats: fewer than 20 words, or a mean word length outside 3-12 characters (a `x`×200 line).
- stop_words: fewer than 2 distinct French stop words (not French, or not prose); a language check
  that needs no model.
- repetition: duplicated lines or paragraphs (over 30 % of them, or over 20 % of the characters);
  the most frequent 2/3/4-gram of words covering over 20/18/16 % of the characters (Gopher); repeated
  5/7/10-grams covering over 50/46/40 % (Gopher says 15-10 %, which drops 20 % of the legal codes and 40 % of
  the public-service pages, templated by nature; at 50-40 % about 1 % of them).
- symbols: over 10 % of "#" or ellipses per word, over 90 % of lines starting with a bullet, over 30 %
  ending with an ellipsis, or under 70 % of words holding a letter (Gopher says 80 %: French legal
  text is full of article numbers).
- digits: over 20 % of the characters are digits (tables, listings, logs).
- short_lines: over 67 % of the lines under 30 characters, with under 12 % ending in punctuation
  (FineWeb's two line rules, joined: dialogue in novels has short lines that end in punctuation).
- boilerplate: "lorem ipsum", or over 20 % of the lines being web boilerplate (cookies, JavaScript,
  legal notices, newsletters, "cliquez ici"...) (C4's line rules, as a document rule: lines are not
  removed, so that kept text is exactly the source's).

Near-duplicates (`minhash`): the document's lowercased word 5-grams, hashed, into a datasketch MinHash;
`create` finds earlier documents sharing an LSH band with datasketch's MinHashLSH.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import xxhash

RULES = ("word_stats", "stop_words", "repetition", "symbols", "digits", "short_lines", "boilerplate")

STOP_WORDS = frozenset(
	[
		"le",
		"la",
		"les",
		"de",
		"des",
		"du",
		"un",
		"une",
		"et",
		"est",
		"en",
		"que",
		"qui",
		"pour",
		"dans",
		"pas",
		"sur",
		"au",
		"aux",
		"avec",
		"il",
		"elle",
		"ils",
		"ne",
		"se",
		"ce",
		"son",
		"sa",
		"ses",
		"par",
		"plus",
		"ou",
		"mais",
		"nous",
		"vous",
		"on",
		"leur",
		"cette",
		"sont",
		"été",
		"être",
		"a",
		"à",
	]
)
BOILERPLATE = (
	"cookie",
	"javascript",
	"tous droits réservés",
	"mentions légales",
	"politique de confidentialité",
	"conditions générales d'utilisation",
	"cliquez ici",
	"newsletter",
	"abonnez-vous",
	"inscrivez-vous",
	"en poursuivant votre navigation",
	"partager sur facebook",
	"lire la suite",
)
BULLETS = ("•", "●", "○", "▪", "‣", "-", "*", "–", "—")
PUNCTUATION_END = tuple('.!?»"…:;)')
WORD = re.compile(r"\w+")
SHINGLE = 5  # words per MinHash shingle (FineWeb)


def rejection(text: str, rules: Any) -> str | None:
	"""The first rule of RULES (among those switched on in `rules`) that `text` fails, else None."""
	words = text.split()
	for rule in RULES:
		if getattr(rules, rule) and _CHECKS[rule](text, words):
			return rule
	return None


def _word_stats(text: str, words: list[str]) -> bool:
	if len(words) < 20:
		return True
	mean = sum(map(len, words)) / len(words)
	return not 3 <= mean <= 12


def _stop_words(text: str, words: list[str]) -> bool:
	return len(STOP_WORDS.intersection(text[:20_000].lower().split())) < 2


def _symbols(text: str, words: list[str]) -> bool:
	n = max(len(words), 1)
	if (text.count("#") + text.count("...") + text.count("…")) / n > 0.1:
		return True
	lines = [line for line in text.splitlines() if line.strip()]
	if lines and sum(line.lstrip().startswith(BULLETS) for line in lines) / len(lines) > 0.9:
		return True
	if lines and sum(line.rstrip().endswith(("...", "…")) for line in lines) / len(lines) > 0.3:
		return True
	# a word without a letter has no case: its upper and lower forms are the same (French letters all have case)
	sample = words[:5_000]  # a ratio: the first 5,000 words tell it
	return sum(w.upper() == w.lower() for w in sample) / max(len(sample), 1) > 0.3


def _digits(text: str, words: list[str]) -> bool:
	return sum(map(text.count, "0123456789")) / max(len(text), 1) > 0.2


def _short_lines(text: str, words: list[str]) -> bool:
	lines = [line.strip() for line in text.splitlines() if line.strip()]
	if len(lines) < 3:
		return False
	short = sum(len(line) < 30 for line in lines) / len(lines)
	ended = sum(line.endswith(PUNCTUATION_END) for line in lines) / len(lines)
	return short > 0.67 and ended < 0.12


def _boilerplate(text: str, words: list[str]) -> bool:
	lower = text.lower()
	if "lorem ipsum" in lower:
		return True
	if not any(phrase in lower for phrase in BOILERPLATE):  # substring search: the common case is fast
		return False
	lines = [line for line in lower.splitlines() if line.strip()]
	return sum(any(phrase in line for phrase in BOILERPLATE) for line in lines) / len(lines) > 0.2


def _duplicate_fraction(parts: list[str]) -> tuple[float, float]:
	"""(share of the parts, share of their characters) that repeat an earlier part."""
	seen: set[str] = set()
	count = chars = 0
	for part in parts:
		if part in seen:
			count += 1
			chars += len(part)
		seen.add(part)
	return count / max(len(parts), 1), chars / max(sum(map(len, parts)), 1)


def _repetition(text: str, words: list[str]) -> bool:
	for parts in ([p for p in text.split("\n\n") if p.strip()], [line for line in text.split("\n") if line.strip()]):
		share, chars = _duplicate_fraction(parts)
		if share > 0.3 or chars > 0.2:
			return True
	if len(words) < 2:
		return False
	ids = _word_ids(words)
	lengths = np.fromiter(map(len, words), dtype=np.int64, count=len(words))
	total = lengths.sum()
	for n, limit in ((2, 0.20), (3, 0.18), (4, 0.16)):  # the most frequent n-gram's share of the characters
		grams = _ngram_keys(ids, n)
		if len(grams) == 0:
			break
		_, first, counts = np.unique(grams, return_index=True, return_counts=True)
		top = int(np.argmax(counts))
		if counts[top] > 1 and counts[top] * lengths[first[top] : first[top] + n].sum() / total > limit:
			return True
	for n, limit in ((5, 0.50), (7, 0.46), (10, 0.40)):  # repeated n-grams' characters
		grams = _ngram_keys(ids, n)
		if len(grams) == 0:
			break
		_, first = np.unique(grams, return_index=True)
		repeated = np.ones(len(grams), dtype=bool)
		repeated[first] = False  # an n-gram's first occurrence is not a repetition
		covered = np.convolve(repeated, np.ones(n, dtype=bool))[: len(ids)] > 0
		if lengths[covered].sum() / total > limit:
			return True
	return False


def _ngram_keys(ids: np.ndarray, n: int) -> np.ndarray:
	"""One uint64 key per word n-gram (a polynomial hash of the word ids; collisions are negligible)."""
	if len(ids) < n:
		return np.zeros(0, dtype=np.uint64)
	keys = ids[: len(ids) - n + 1].copy()
	for k in range(1, n):  # wraps around modulo 2**64, as meant (numpy does not warn for integer arrays)
		keys *= np.uint64(1_000_003)
		keys += ids[k : len(ids) - n + 1 + k]
	return keys


def _word_ids(words: list[str]) -> np.ndarray:
	"""Each word's index among the distinct words, in order of first appearance."""
	index = {w: i for i, w in enumerate(dict.fromkeys(words))}
	return np.fromiter(map(index.__getitem__, words), dtype=np.uint64, count=len(words))


_CHECKS = {
	"word_stats": _word_stats,
	"stop_words": _stop_words,
	"repetition": _repetition,
	"symbols": _symbols,
	"digits": _digits,
	"short_lines": _short_lines,
	"boilerplate": _boilerplate,
}


def shingles(text: str) -> np.ndarray:
	"""32-bit hashes of the distinct word 5-grams of a document, lowercased (the whole text if shorter).

	Words are split on whitespace (punctuation stays on its word: the same on both sides of a copy)."""
	words = text.lower().split()
	distinct = list(dict.fromkeys(words))
	index = {w: i for i, w in enumerate(distinct)}
	hashes = np.fromiter((xxhash.xxh32_intdigest(w.encode()) for w in distinct), dtype=np.uint64, count=len(distinct))
	word_hashes = hashes[np.fromiter(map(index.__getitem__, words), dtype=np.int64, count=len(words))]
	if len(word_hashes) == 0:
		return np.array([xxhash.xxh32_intdigest(text.encode())], dtype=np.uint64)
	keys = _ngram_keys(word_hashes, min(SHINGLE, len(word_hashes)))
	return np.unique(keys & np.uint64(0xFFFFFFFF))


_PERMUTATIONS: dict[int, Any] = {}


def minhash(text: str, num_perm: int):
	"""The datasketch MinHash of a document's shingles (fixed seed: signatures compare across runs)."""
	from datasketch import MinHash

	if num_perm not in _PERMUTATIONS:  # drawn once per process, not once per document
		_PERMUTATIONS[num_perm] = MinHash(num_perm=num_perm, seed=1).permutations
	signature = MinHash(
		num_perm=num_perm, seed=1, hashfunc=int, permutations=_PERMUTATIONS[num_perm], scheme="affine32"
	)
	signature.update_batch(shingles(text).tolist())
	return signature
