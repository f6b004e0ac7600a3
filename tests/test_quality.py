"""Document rules and MinHash signatures (dimgpt.data.quality) against their plain definitions (quality_oracle.py).

The rules' decisions and the signatures must not change with the code's speed: stored datasets keep their
`.sig.npy` beside each shard, and a rule's counts in data.json compare across versions. Compared on real French
documents (../shared/data, skipped where absent) and on variants of them pushed across each rule's limits.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import quality_oracle as oracle

from dimgpt.config import QualityConfig
from dimgpt.data import quality

ONLY = {rule: QualityConfig(**{r: r == rule for r in quality.RULES}) for rule in quality.RULES}


def _texts(path: Path, every: int = 1) -> list[str]:
	lines = path.read_text(encoding="utf-8").splitlines()[::every]
	return [json.loads(line)["text"].strip() for line in lines]


def _conversations(folder: Path, every: int) -> list[str]:
	"""Each message, and each conversation's messages joined, of every `every`-th conversation."""
	texts = []
	for path in sorted(folder.glob("*.jsonl")):
		for line in path.read_text(encoding="utf-8").splitlines()[::every]:
			messages = [m["text"].strip() for m in json.loads(line)["conversation"]]
			texts += [*messages, "\n\n".join(messages)]
	return texts


def _variants(texts: list[str], rng: np.random.Generator) -> list[str]:
	"""Real documents changed by a random amount towards each rule's limit (each rule then fires on some)."""
	out = []
	for text in texts:
		lines, words = text.split("\n"), text.split()
		k = int(rng.integers(1, len(lines) + 1))
		out.append(text + "\n" + "\n".join(lines[:k]))  # repeated lines
		start = int(rng.integers(0, max(len(words) - 12, 1)))
		phrase = " ".join(words[start : start + int(rng.integers(2, 12))])
		out.append(text + (" " + phrase) * int(rng.integers(1, 40)))  # a repeated n-gram
		share = rng.random()
		out.append("\n".join(("- " + line if rng.random() < share else line) for line in lines))  # bullets
		out.append("\n".join((line + "..." if rng.random() < share else line) for line in lines))  # ellipses
		width = int(rng.integers(8, 60))  # short lines, their end punctuation kept or not
		wrapped = [" ".join(words[i : i + max(width // 6, 1)]) for i in range(0, len(words), max(width // 6, 1))]
		out.append("\n".join(w.rstrip(".;:!?") if rng.random() < share else w for w in wrapped))
		out.append("".join(str(rng.integers(10)) if c.isalpha() and rng.random() < share / 2 else c for c in text))
		out.append(" ".join(f"{rng.integers(1000)}.{rng.integers(10)}" if rng.random() < share else w for w in words))
		phrase = quality.BOILERPLATE[int(rng.integers(len(quality.BOILERPLATE)))]
		out.append("\n".join((line + " " + phrase.upper() if rng.random() < share else line) for line in lines))
	return out


@pytest.fixture(scope="module")
def documents(corpus_fr: Path, instruct_fr: Path) -> list[str]:
	real = _texts(corpus_fr / "service_public_fiches.jsonl", 2) + _texts(corpus_fr / "legi_codes.jsonl", 8)
	real += _texts(corpus_fr / "textbox_fr19_prose.jsonl", 8) + _conversations(instruct_fr, 12)
	novels = sorted(_texts(corpus_fr / "eltec_fra_novels.jsonl"), key=len)
	real += [novels[0], novels[len(novels) // 2]]  # long documents: ~100k words
	rng = np.random.default_rng(0)
	picked = rng.choice(len(real) - 2, size=60, replace=False)
	return real + _variants([real[i] for i in picked], rng) + ["", "  \n ", "mot", "deux mots", "un deux trois quatre"]


def test_rules_decide_as_their_plain_definitions_on_real_documents(documents: list[str]) -> None:
	"""A third of the documents (every variant kind among them); the slow lane checks them all."""
	_rules_as_their_plain_definitions(documents[::3] + documents[-8:])


@pytest.mark.slow
def test_rules_decide_as_their_plain_definitions_on_every_document(documents: list[str]) -> None:
	_rules_as_their_plain_definitions(documents)


def _rules_as_their_plain_definitions(documents: list[str]) -> None:
	fired = dict.fromkeys(quality.RULES, 0)
	for text in documents:
		document = quality.Document(text)  # one split shared by the rules, as create-data does
		want = [rule for rule in quality.RULES if oracle.RULES[rule](text)]
		for rule in quality.RULES:
			assert (quality.rejection(document, ONLY[rule]) == rule) == (rule in want), (rule, text[:200])
			fired[rule] += rule in want
		assert quality.rejection(text, QualityConfig()) == (want[0] if want else None)  # the first in RULES order
	assert all(0 < n < len(documents) for n in fired.values()), fired  # each rule both drops and keeps here


def test_minhash_signatures_are_the_plain_definitions(documents: list[str]) -> None:
	"""Bit-identical to one datasketch update with the shingle set: the signatures already stored stay valid."""
	for text in documents[::3] + documents[-8:]:
		want = oracle.minhash(text, 112).hashvalues
		document = quality.Document(text)
		quality.rejection(document, QualityConfig())  # the split the rules made is reused
		got = quality.minhash(document, 112)
		assert got.hashvalues.dtype == want.dtype and np.array_equal(got.hashvalues, want), text[:200]
		assert np.array_equal(quality.minhash(text, 112).hashvalues, want)
		assert set(quality.shingles(text).tolist()) == oracle.shingles(text)


def test_lowercasing_never_moves_word_boundaries() -> None:
	"""What lets the shingles lowercase each distinct word alone: text.lower().split() == [w.lower() for w in split]."""
	for code in range(0x110000):
		char = chr(code)
		lower = char.lower()
		assert char.isspace() == any(c.isspace() for c in lower) and (not char.isspace() or lower == char), hex(code)
	for space in (c for c in map(chr, range(0x110000)) if c.isspace()):  # final sigma looks across its neighbours
		for text in (f"AΣ{space}B", f"A{space}ΣB", f"Σ{space}Σ", f"A.Σ{space}.B"):
			assert text.lower().split() == [w.lower() for w in text.split()]
