"""The main job on the tiny preset: trains a tokenizer on the embedded corpus, then reuses it."""

from __future__ import annotations

from pathlib import Path

import pytest

from dimgpt.config import get_preset
from dimgpt.data.corpus import embedded_corpus_info, embedded_documents
from dimgpt.data.tokenizer import CONTROL_TOKENS, Tokenizer
from dimgpt.pipeline import run_main_job


def test_embedded_corpus_is_real_text() -> None:
	info = embedded_corpus_info()
	docs = list(embedded_documents())
	assert info["documents"] == len(docs) > 10 and info["characters"] > 100_000 and info["licence"]
	words = " ".join(docs).split()
	assert len(set(words)) > 5_000  # real prose, not a repeated filler


def test_run_main_job_tiny(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
	run_main_job("tiny", tmp_path)
	tokenizer = Tokenizer.load(tmp_path / "vocab.txt")
	assert tokenizer.vocab_size == get_preset("tiny").data.vocab_size
	assert tuple(tokenizer.vocab[:10]) == CONTROL_TOKENS
	first = capsys.readouterr().out
	assert "trained" in first and "decoded:" in first

	run_main_job("tiny", tmp_path)  # a second run reuses the vocabulary
	second = capsys.readouterr().out
	assert "reusing" in second and Tokenizer.load(tmp_path / "vocab.txt").fingerprint == tokenizer.fingerprint


def test_run_main_job_refuses_a_foreign_vocab(tmp_path: Path) -> None:
	Tokenizer([*CONTROL_TOKENS, "a", "b"]).save(tmp_path / "vocab.txt")
	with pytest.raises(ValueError, match=r"vocab\.txt has 12 tokens"):
		run_main_job("tiny", tmp_path)
