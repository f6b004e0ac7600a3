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
`create` drops a document sharing an LSH band with an earlier one (`dedup`: datasketch's MinHashLSHBloom).

Both take a text or a `Document`: the text split once into words for every rule and the shingles (create-data's
workers make one per record); what is costly per word is done once per distinct word, and the n-gram rules
first bound what any n-gram could cover, sorting only where the bound reaches a limit (bench/quality.py).
"""

from __future__ import annotations

import array
import itertools
import operator
from functools import cached_property
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
ELLIPSES = ("...", "…")
SHINGLE = 5  # words per MinHash shingle (FineWeb)
REPEATED_TOP = ((2, 0.20), (3, 0.18), (4, 0.16))  # the most frequent n-gram's share of the characters
REPEATED_ALL = ((5, 0.50), (7, 0.46), (10, 0.40))  # repeated n-grams' share of the characters
MINHASH_CHUNK = 1_024  # shingles per datasketch update: (chunk x permutations) uint32 temporaries stay in cache


class Document:
	"""A document split once into whitespace words, shared by every rule and by the MinHash shingles.

	What a rule needs is computed on first use (`ids`, `lengths`, `lines`), so a document that an early
	rule drops costs no more than that rule; `rejection` then `minhash` on one Document split it once."""

	def __init__(self, text: str) -> None:
		self.text = text
		self.words = text.split()

	@cached_property
	def distinct(self) -> dict[str, int]:
		"""Each distinct word's index, in order of first appearance."""
		return dict(zip(dict.fromkeys(self.words), itertools.count()))

	@cached_property
	def ids(self) -> np.ndarray:
		"""Each word's index among the distinct words (uint64: n-gram keys are built from them)."""
		if len(self.words) < 2:  # itemgetter of one key gives the value, not a tuple
			return np.array([self.distinct[w] for w in self.words], dtype=np.uint64)
		ids = array.array("Q", operator.itemgetter(*self.words)(self.distinct))  # from a tuple: no Python loop
		return np.frombuffer(ids, dtype=np.uint64)

	@cached_property
	def counts(self) -> np.ndarray:
		"""How often each distinct word occurs."""
		return np.bincount(self.ids.view(np.int64), minlength=len(self.distinct))

	@cached_property
	def distinct_lengths(self) -> np.ndarray:
		return np.fromiter(map(len, self.distinct), dtype=np.int64, count=len(self.distinct))

	@cached_property
	def lengths(self) -> np.ndarray:
		"""Each word's length in characters."""
		return self.distinct_lengths[self.ids.view(np.int64)]

	@cached_property
	def chars(self) -> int:
		"""Characters in words (the text less its whitespace)."""
		return int(self.counts @ self.distinct_lengths)

	@cached_property
	def lines(self) -> list[str]:
		"""The non-blank lines (`str.splitlines`), stripped."""
		return list(filter(None, map(str.strip, self.text.splitlines())))


def rejection(text: str | Document, rules: Any) -> str | None:
	"""The first rule of RULES (among those switched on in `rules`) that `text` fails, else None."""
	document = text if isinstance(text, Document) else Document(text)
	for rule in RULES:
		if getattr(rules, rule) and _CHECKS[rule](document):
			return rule
	return None


def _word_stats(document: Document) -> bool:
	if len(document.words) < 20:
		return True
	mean = document.chars / len(document.words)
	return not 3 <= mean <= 12


def _stop_words(document: Document) -> bool:
	return len(STOP_WORDS.intersection(document.text[:20_000].lower().split())) < 2


def _symbols(document: Document) -> bool:
	text, words, lines = document.text, document.words, document.lines
	n = max(len(words), 1)
	ellipses = text.count("...") + text.count("…")
	if (text.count("#") + ellipses) / n > 0.1:
		return True
	# stripped lines: their first and last characters are those of lstrip() and rstrip()
	if lines and sum(map(str.startswith, lines, itertools.repeat(BULLETS))) / len(lines) > 0.9:
		return True
	# a line ending with an ellipsis holds one of the text's `ellipses`: count the lines only when that could matter
	if (
		lines
		and ellipses / len(lines) > 0.3
		and sum(map(str.endswith, lines, itertools.repeat(ELLIPSES))) / len(lines) > 0.3
	):
		return True
	# a word without a letter has no case: its upper and lower forms are the same (French letters all have case)
	# a ratio: the first 5,000 words tell it; each distinct word is looked at once (ids count in order of appearance)
	sample = document.ids[:5_000].view(np.int64)
	if len(sample) == 0:
		return False
	seen = list(itertools.islice(document.distinct, int(sample.max()) + 1))
	caseless = np.fromiter(map(operator.eq, map(str.upper, seen), map(str.lower, seen)), dtype=bool, count=len(seen))
	return int(caseless[sample].sum()) / len(sample) > 0.3


def _digits(document: Document) -> bool:
	utf8 = np.frombuffer(
		document.text.encode("utf-8", "surrogatepass"), dtype=np.uint8
	)  # an ASCII byte in UTF-8 is that character
	digits = np.count_nonzero(utf8 - np.uint8(ord("0")) < 10)
	return int(digits) / max(len(document.text), 1) > 0.2


def _short_lines(document: Document) -> bool:
	lines = document.lines
	if len(lines) < 3:
		return False
	short = sum(map((30).__gt__, map(len, lines))) / len(lines)
	return short > 0.67 and sum(map(str.endswith, lines, itertools.repeat(PUNCTUATION_END))) / len(lines) < 0.12


def _boilerplate(document: Document) -> bool:
	lower = document.text.lower()
	if "lorem ipsum" in lower:
		return True
	if not any(phrase in lower for phrase in BOILERPLATE):  # substring search: the common case is fast
		return False
	lines = [line for line in lower.splitlines() if line.strip()]
	return sum(any(phrase in line for phrase in BOILERPLATE) for line in lines) / len(lines) > 0.2


def _duplicate_fraction(parts: list[str]) -> tuple[float, float]:
	"""(share of the parts, share of their characters) that repeat an earlier part."""
	distinct = set(parts)
	chars = len("".join(parts))
	return (len(parts) - len(distinct)) / max(len(parts), 1), (chars - len("".join(distinct))) / max(chars, 1)


def _repetition(document: Document) -> bool:
	text = document.text
	for parts in (text.split("\n\n"), text.split("\n")):
		share, chars = _duplicate_fraction(list(filter(str.strip, parts)))
		if share > 0.3 or chars > 0.2:
			return True
	if len(document.words) < 2:
		return False
	ids, total = document.ids, document.chars
	# An n-gram occurring c times covers at most c x its characters <= n x the largest (count x length) of a
	# word: when that bound is under the limit, no n-gram can exceed it and the sort below is not needed.
	top_word = int((document.counts * document.distinct_lengths).max())
	for n, limit in REPEATED_TOP:
		if len(ids) < n:
			return False
		if n * top_word / total <= limit:
			continue
		grams = _ngram_keys(ids, n)
		_, first, counts = np.unique(grams, return_index=True, return_counts=True)
		top = int(np.argmax(counts))
		if counts[top] > 1 and counts[top] * document.lengths[first[top] : first[top] + n].sum() / total > limit:
			return True
	# Repeated n-grams' coverage only falls as n grows (a repeated 7-gram holds repeated 5-grams covering its
	# words, a 10-gram 7-grams), so an n whose limit is at or above a share already bounded cannot fire. The first
	# bound needs no positions: the r 5-grams that repeat an earlier one (counted on a plain sort, cheaper than
	# the stable one that finds which) cover at most the characters of the r widest 5-word windows.
	n = REPEATED_ALL[0][0]
	if len(ids) < n:
		return False
	first_grams = _ngram_keys(ids, n)
	ordered = np.sort(first_grams.astype(np.uint32))  # low halves sort faster; a collision only adds to r
	r = int(np.count_nonzero(ordered[1:] == ordered[:-1]))
	ends = np.cumsum(document.lengths)
	windows = ends[n - 1 :] - np.concatenate(([0], ends[: len(ends) - n]))
	bound = np.partition(windows, len(windows) - r)[len(windows) - r :].sum() / total if r else 0.0
	for n, limit in REPEATED_ALL:
		if len(ids) < n:
			return False
		if bound <= limit:
			continue
		grams = first_grams if n == REPEATED_ALL[0][0] else _ngram_keys(ids, n)
		_, first = np.unique(grams, return_index=True)
		repeated = np.ones(len(grams), dtype=bool)
		repeated[first] = False  # an n-gram's first occurrence is not a repetition
		covered = np.convolve(repeated, np.ones(n, dtype=bool))[: len(ids)] > 0
		bound = document.lengths[covered].sum() / total
		if bound > limit:
			return True
	return False


def _ngram_keys(ids: np.ndarray, n: int) -> np.ndarray:
	"""One key per word n-gram (a polynomial hash of the word ids, wrapping around in the ids' unsigned dtype;
	collisions are negligible)."""
	if len(ids) < n:
		return np.zeros(0, dtype=ids.dtype)
	keys = ids[: len(ids) - n + 1].copy()
	for k in range(1, n):  # wraps around modulo 2**bits, as meant (numpy does not warn for integer arrays)
		keys *= ids.dtype.type(1_000_003)
		keys += ids[k : len(ids) - n + 1 + k]
	return keys


_CHECKS = {
	"word_stats": _word_stats,
	"stop_words": _stop_words,
	"repetition": _repetition,
	"symbols": _symbols,
	"digits": _digits,
	"short_lines": _short_lines,
	"boilerplate": _boilerplate,
}


def shingles(text: str | Document) -> np.ndarray:
	"""32-bit hashes of the word 5-grams of a document, lowercased (the whole text if shorter), in text order
	(a repeated 5-gram repeats its hash: a MinHash takes the minimum over them, the same for a set).

	Words are split on whitespace (punctuation stays on its word: the same on both sides of a copy). A 5-gram's
	hash is the polynomial of its words' xxh32 modulo 2**32 (the low half of the same polynomial modulo 2**64:
	stored signatures stay valid), each word lowercased alone (the same words as the lowercased text split: no
	character's lowercase is or holds whitespace, tests/test_quality.py checks it)."""
	document = text if isinstance(text, Document) else Document(text)
	if not document.words:
		return np.array([xxhash.xxh32_intdigest(document.text.encode())], dtype=np.uint32)
	lowered = map(str.encode, map(str.lower, document.distinct))
	hashes = np.fromiter(map(xxhash.xxh32_intdigest, lowered), dtype=np.uint32, count=len(document.distinct))
	return _ngram_keys(hashes[document.ids.view(np.int64)], min(SHINGLE, len(document.words)))


_PERMUTATIONS: dict[int, Any] = {}


def minhash(text: str | Document, num_perm: int):
	"""The datasketch MinHash of a document's shingles (fixed seed: signatures compare across runs)."""
	from datasketch import MinHash

	if num_perm not in _PERMUTATIONS:  # drawn once per process, not once per document
		_PERMUTATIONS[num_perm] = MinHash(num_perm=num_perm, seed=1).permutations
	signature = MinHash(
		num_perm=num_perm, seed=1, hashfunc=operator.index, permutations=_PERMUTATIONS[num_perm], scheme="affine32"
	)
	keys = shingles(text)
	for start in range(0, len(keys), MINHASH_CHUNK):  # the minimum over chunks is the minimum over all
		signature.update_batch(keys[start : start + MINHASH_CHUNK].tolist())
	return signature
