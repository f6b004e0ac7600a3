"""Tokenizer: the fast encoder against the plain oracle, vocab.txt, training rules, bad input."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import regex
import tokenizers
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizer_oracle import encode as oracle_encode

from dimgpt.data import greedy_kernel
from dimgpt.data.cleaning import EMOJI_SEQUENCES, TOKEN_CHARACTERS, clean, unclean
from dimgpt.data.corpus import embedded_documents
from dimgpt.data.tokenizer import ASSISTANT, CONTROL_TOKENS, NEW_LINE, TAB, UNKNOWN, USER, Tokenizer


def read_corpus(corpus_dir: Path, chars: int, skip: int = 0) -> list[str]:
	"""Documents of corpus_fr (every file in turn, pieces of at most 200k chars) from `skip` chars on."""
	docs, seen = [], 0
	for path in sorted(corpus_dir.glob("*.jsonl")):
		with path.open(encoding="utf-8") as f:
			for line in f:
				text = json.loads(line)["text"]
				for i in range(0, len(text), 200_000):
					piece = text[i : i + 200_000]
					seen += len(piece)
					if seen > skip:
						docs.append(piece)
					if seen >= skip + chars:
						return docs
	return docs


ENCODERS = [
	pytest.param(True, id="compiled", marks=pytest.mark.skipif(not greedy_kernel.available(), reason="needs numba")),
	pytest.param(False, id="word-cache"),
]


@pytest.fixture(scope="module", params=ENCODERS)
def compiled(request: pytest.FixtureRequest) -> bool:
	"""Every encoding test runs on both encoders: the numba kernel and the pure-Python word cache."""
	return request.param


@pytest.fixture(scope="module")
def embedded_vocab() -> list[str]:
	return Tokenizer.train(embedded_documents(), 2_000, forced_tokens=("Python",), progress=False).vocab


@pytest.fixture(scope="module")
def embedded_tokenizer(embedded_vocab: list[str], compiled: bool) -> Tokenizer:
	return Tokenizer(embedded_vocab, compiled=compiled)


@pytest.fixture(scope="module")
def fr_tokenizer(corpus_fr: Path, compiled: bool) -> Tokenizer:
	return Tokenizer(Tokenizer.train(read_corpus(corpus_fr, 1_000_000), 3_000, progress=False).vocab, compiled=compiled)


@pytest.fixture(scope="module")
def holey_tokenizer(compiled: bool) -> Tokenizer:
	# Tokens whose characters are not tokens on their own, no single space, a 2-space token: the hard cases.
	return Tokenizer(
		[*CONTROL_TOKENS, "ab", " ab", "abc", "xyz", "x", "  ", " z", "é", "1", " 1", "!", "?!", "⮜", "a", "b", "c"],
		compiled=compiled,
	)


# --- the oracle


def test_oracle_on_french_corpus(fr_tokenizer: Tokenizer, corpus_fr: Path) -> None:
	docs = read_corpus(corpus_fr, 1_100_000, skip=1_000_000)  # held out from training
	assert sum(map(len, docs)) >= 1_000_000
	fast = fr_tokenizer.encode_batch(docs)
	assert [ids.tolist() for ids in fast] == [oracle_encode(d, fr_tokenizer.vocab) for d in docs]
	assert [ids.tolist() for ids in fr_tokenizer.encode_batch(docs, workers=1)] == [ids.tolist() for ids in fast]


def test_oracle_on_embedded_corpus(embedded_tokenizer: Tokenizer) -> None:
	docs = list(embedded_documents())
	for text, ids in zip(docs, embedded_tokenizer.encode_batch(docs)):
		assert ids.tolist() == oracle_encode(text, embedded_tokenizer.vocab)


PIECES = st.one_of(
	st.text(max_size=12),
	st.text(alphabet="ab xyzc1é!?\t\n⮜", max_size=20),
	st.sampled_from(
		[
			*(s for s, _ in EMOJI_SEQUENCES),
			*CONTROL_TOKENS,
			"2024",
			" 12345",
			"    ",
			"  ",
			" ",
			"\u00a0",
			"日本",
			"\u0301",
		]
	),
	st.sampled_from(sorted(TOKEN_CHARACTERS)),
)
TEXT = st.lists(PIECES, max_size=25).map("".join)


@settings(max_examples=300, deadline=None)
@given(TEXT, st.booleans(), st.booleans())
def test_oracle_on_generated_text(
	embedded_tokenizer: Tokenizer, holey_tokenizer: Tokenizer, text: str, clean_text: bool, control: bool
) -> None:
	for tokenizer in (embedded_tokenizer, holey_tokenizer):
		expected = oracle_encode(text, tokenizer.vocab, clean_text=clean_text, control=control)
		assert tokenizer.encode(text, clean=clean_text, control=control) == expected
		batch = tokenizer.encode_batch([text, text[::-1]], clean=clean_text, control=control, workers=1)
		assert batch[0].tolist() == expected and batch[0].dtype == np.int32


def test_character_classes_of_every_code_point() -> None:
	"""The kernel's class table, built in one regex pass, against each code point matched alone."""
	classes = greedy_kernel.character_classes()
	letter = regex.compile(r"\p{L}")
	expected = np.array(
		[greedy_kernel.LETTER if letter.fullmatch(chr(c)) else greedy_kernel.OTHER for c in range(0x110000)]
	)
	expected[[ord(c) for c in "0123456789"]] = greedy_kernel.DIGIT
	expected[[ord(" "), ord("\t"), ord("\n")]] = [
		greedy_kernel.SPACE,
		greedy_kernel.TAB_CLASS,
		greedy_kernel.NEW_LINE_CLASS,
	]
	assert np.array_equal(classes, expected)
	assert (classes == greedy_kernel.LETTER).sum() > 100_000  # letters of every script, not only Latin ones


def test_long_words_and_space_runs(holey_tokenizer: Tokenizer, embedded_tokenizer: Tokenizer) -> None:
	cases = ["abc" * 40_000 + "é" * 10 + "ab", " " * 50_001 + "ab" + " " * 3, "xyz" * 1000 + "日" + "ab  \n  ab   ab"]
	for tokenizer in (holey_tokenizer, embedded_tokenizer):
		for text in cases:
			assert tokenizer.encode(text, clean=False) == oracle_encode(text, tokenizer.vocab, clean_text=False)


# --- control tokens


@settings(max_examples=200, deadline=None)
@given(TEXT, st.sampled_from(CONTROL_TOKENS[5:]), TEXT, st.booleans())
def test_typed_control_token_never_becomes_one(
	embedded_tokenizer: Tokenizer, before: str, token: str, after: str, clean_text: bool
) -> None:
	ids = embedded_tokenizer.encode(before + token + after, clean=clean_text)
	assert not set(ids) & set(range(5, 10))


def test_control_tokens_honoured_on_request(embedded_tokenizer: Tokenizer) -> None:
	ids = embedded_tokenizer.encode("⮜user⮞ Bonjour ⮜assistant⮞ Salut\tcava\n", control=True)
	assert ids[0] == USER and ASSISTANT in ids and TAB in ids
	assert embedded_tokenizer.decode(ids, control=True).startswith("⮜user⮞Bonjour⮜assistant⮞")
	assert embedded_tokenizer.decode(ids) == "BonjourSalut\tcava"


# --- decoding


@pytest.fixture(scope="module")
def full_tokenizer() -> Tokenizer:
	# Every character cleaning can output is a token: decoding gives back the whole cleaned text.
	return Tokenizer([*CONTROL_TOKENS, *sorted(TOKEN_CHARACTERS), " de", " la", "  ", "ou"])


@settings(max_examples=200, deadline=None)
@given(TEXT)
def test_decode_round_trip(full_tokenizer: Tokenizer, text: str) -> None:
	assert full_tokenizer.decode(full_tokenizer.encode(text)) == unclean(clean(text))


def test_decode_bad_ids_and_unknowns(full_tokenizer: Tokenizer, embedded_tokenizer: Tokenizer) -> None:
	text = "Le café coûte 3,50 € 😀 ❤️ 🇫🇷\n\tfin  du   texte"
	ids = full_tokenizer.encode(text)
	assert full_tokenizer.decode(np.array(ids)) == unclean(clean(text))
	assert full_tokenizer.decode([-1, 10**9, *ids, full_tokenizer.vocab_size]) == unclean(clean(text))
	assert full_tokenizer.decode([]) == ""
	# Uncleaned "日" has no token: it decodes to nothing (the unknown token has no display text).
	assert embedded_tokenizer.decode(embedded_tokenizer.encode("caf日", clean=False)) == "caf"


# --- vocab.txt


def test_pickled_after_parallel_encoding(embedded_tokenizer: Tokenizer) -> None:
	"""A tokenizer that started encoding workers still pickles (the serve command's engine process gets one):
	without the workers, and the copy encodes the same."""
	docs = list(embedded_documents())
	texts = docs * (1_100_000 // sum(map(len, docs)) + 1)  # enough characters for the workers to start
	expected = embedded_tokenizer.encode_batch(texts, workers=2)
	assert embedded_tokenizer._workers is not None
	copy = pickle.loads(pickle.dumps(embedded_tokenizer))
	assert copy._workers is None and embedded_tokenizer._workers is not None
	assert [ids.tolist() for ids in copy.encode_batch(docs, workers=1)] == [
		ids.tolist() for ids in expected[: len(docs)]
	]


def test_save_load_round_trip(embedded_tokenizer: Tokenizer, tmp_path: Path) -> None:
	path = tmp_path / "vocab.txt"
	embedded_tokenizer.save(path)
	raw = path.read_bytes()
	assert not raw.endswith(b"\n") and raw.decode("utf-8").split("\n") == embedded_tokenizer.vocab
	loaded = Tokenizer.load(path)
	assert loaded.vocab == embedded_tokenizer.vocab and loaded.fingerprint == embedded_tokenizer.fingerprint
	other = Tokenizer([*embedded_tokenizer.vocab[:-1], "zzzz"])
	assert other.fingerprint != embedded_tokenizer.fingerprint


def test_load_errors(tmp_path: Path) -> None:
	good = [*CONTROL_TOKENS, "a", " a"]
	path = tmp_path / "vocab.txt"
	with pytest.raises(FileNotFoundError, match=r"vocab\.txt"):
		Tokenizer.load(tmp_path / "missing" / "vocab.txt")
	path.write_text("\n".join([*good, "a"]), encoding="utf-8")
	with pytest.raises(ValueError, match=r"vocab\.txt.*'a' appears twice, lines 11 and 13"):
		Tokenizer.load(path)
	path.write_text("\n".join(good[1:]), encoding="utf-8")
	with pytest.raises(ValueError, match=r"vocab\.txt: line 1 must be the control token '⮜unknown⮞'"):
		Tokenizer.load(path)
	path.write_text("\n".join(CONTROL_TOKENS[:5]), encoding="utf-8")
	with pytest.raises(ValueError, match="fewer than the 10 control tokens"):
		Tokenizer.load(path)
	path.write_bytes("\n".join(good).encode() + b"\nab\xff\xfe")
	with pytest.raises(ValueError, match=r"vocab\.txt: invalid UTF-8 at byte offset 1\d\d"):
		Tokenizer.load(path)
	path.write_text("\n".join([*good, "", "b"]), encoding="utf-8")
	with pytest.raises(ValueError, match="line 13 is empty"):
		Tokenizer.load(path)


def test_hugging_face_export(fr_tokenizer: Tokenizer, corpus_fr: Path, tmp_path: Path) -> None:
	fr_tokenizer.save_hf(tmp_path / "tokenizer.json")
	hf = tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
	docs = [clean(d) for d in read_corpus(corpus_fr, 200_000, skip=2_000_000)]
	for doc, ids in zip(docs, fr_tokenizer.encode_batch(docs, clean=False)):
		assert hf.encode(doc, add_special_tokens=False).ids == ids.tolist()


# --- training


def test_training_rules(embedded_tokenizer: Tokenizer) -> None:
	vocab = embedded_tokenizer.vocab
	assert len(vocab) == 2_000 and tuple(vocab[:10]) == CONTROL_TOKENS and len(set(vocab)) == len(vocab)
	tokens = vocab[10:]
	assert all(len(t) <= 16 for t in tokens)
	assert all(not (t.endswith(" ") and len(t) > 4) for t in tokens)
	assert all(sum(c.isdigit() for c in t) < 2 for t in tokens)
	assert all(set(t) <= set(TOKEN_CHARACTERS) for t in tokens)  # only what cleaning can output
	assert {str(d) for d in range(10)} | {f" {d}" for d in range(10)} | {"Python"} <= set(tokens)
	sample_chars = set("".join(clean(d) for d in embedded_documents())) - {"\t", "\n"}
	assert sample_chars <= set(tokens)  # no single character dropped
	# Ranked by use: the first tokens are used more than the last on the training sample.
	counts = np.bincount(np.concatenate(embedded_tokenizer.encode_batch(list(embedded_documents()))), minlength=2_000)
	assert counts[10:60].mean() > 10 * counts[-50:].mean()


def test_training_refuses_impossible_sizes() -> None:
	with pytest.raises(ValueError, match="vocab_size=30 is too small"):
		Tokenizer.train(["Bonjour à tous, ceci est un texte."], 30, progress=False)
	with pytest.raises(ValueError, match="empty corpus"):
		Tokenizer.train(["", " \n "], 100, progress=False)


# --- bad input


def test_empty_and_unknown_only(embedded_tokenizer: Tokenizer) -> None:
	assert embedded_tokenizer.encode("") == [] and embedded_tokenizer.encode(" \n ") == []
	assert embedded_tokenizer.encode_batch([]) == []
	assert embedded_tokenizer.encode("日本語", clean=False) == [UNKNOWN] * 3
	assert set(embedded_tokenizer.encode("日本語")) != {UNKNOWN}  # cleaning transliterates it first


def test_big_document(fr_tokenizer: Tokenizer, corpus_fr: Path) -> None:
	# 20 MB in one document: newline-separated copies of a 1 MB block encode to the block's ids each time.
	block = clean(" ".join(read_corpus(corpus_fr, 1_000_000)).replace("\n", " "))
	ids = fr_tokenizer.encode_batch([block], clean=False)[0]
	big = fr_tokenizer.encode_batch(["\n".join([block] * 20)], clean=False)[0]
	expected = np.concatenate([np.append(ids, NEW_LINE)] * 20)[:-1]
	assert np.array_equal(big, expected)


def test_training_keeps_every_authorised_character() -> None:
	# A vocabulary trained on English (ASCII) text still has é, ç, à, ⑩: cleaned text has no unknown token.
	english = [d for d in (clean(x) for x in embedded_documents()) if d.isascii()][:200]
	tokenizer = Tokenizer.train(english, 1_500, progress=False)
	assert set(TOKEN_CHARACTERS) <= set(tokenizer.vocab)
	text = "Ça débute à l'été"
	ids = tokenizer.encode(text)
	assert UNKNOWN not in ids and tokenizer.decode(ids) == text
