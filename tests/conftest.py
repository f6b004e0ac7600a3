"""Shared test fixtures: one tokenizer and the tiny dataset, each made once per session, and the real
French data when present.

Plain helpers (small configs, loaders) are in support.py.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from dimgpt.data.tokenizer import Tokenizer

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def pytest_configure(config: pytest.Config) -> None:
	"""Under pytest-xdist (`make test-fast` runs two workers), one torch thread per worker: two workers of
	two threads on two cores would stall on each other at every small kernel. Subprocesses inherit it."""
	if os.environ.get("PYTEST_XDIST_WORKER"):
		os.environ.setdefault("OMP_NUM_THREADS", "1")
		torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tokenizer() -> Tokenizer:
	"""A 2,000-token tokenizer trained on shipped French text: the instruction resources' conversations,
	the preprompts and the first 40 documents of the embedded corpus (every character cleaning outputs is
	a token). For tests that need a real tokenizer; tests of tokenizer training train their own."""
	from dimgpt.data.corpus import embedded_documents
	from dimgpt.data.mix import RESOURCES
	from dimgpt.presets import load_preprompts

	turns = [
		turn["text"]
		for name in ("default.jsonl", "self_identity.jsonl")
		for line in (RESOURCES / name).read_text(encoding="utf-8").splitlines()
		if line.strip()
		for turn in json.loads(line)["conversation"]
	]
	return Tokenizer.train([*turns, *load_preprompts(), *list(embedded_documents())[:40]], 2_000, progress=False)


@pytest.fixture(scope="session")
def corpus_fr() -> Path:
	"""The French prose corpus (skips the test where it is absent)."""
	path = SHARED_DATA / "corpus_fr"
	if not path.is_dir():
		pytest.skip(f"real French corpus not found at {path}")
	return path


@pytest.fixture(scope="session")
def instruct_fr() -> Path:
	"""The French instruction conversations (skips the test where they are absent)."""
	path = SHARED_DATA / "instruct_fr"
	if not path.is_dir():
		pytest.skip(f"French instruction data not found at {path}")
	return path


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
	"""The tiny preset's dataset (embedded corpus, small tokenizer budget), built once per session."""
	from dimgpt.data.create import create_data
	from dimgpt.presets import get_preset

	out = tmp_path_factory.getbasetemp() / "tiny-dataset"
	if not (out / "data.json").exists():
		create_data(replace(get_preset("tiny").data, tokenizer_chars=300_000), out, progress=False)
	return out


@pytest.fixture
def one_thread():
	"""Tiny models run faster on one thread, above all on a busy machine."""
	threads = torch.get_num_threads()
	torch.set_num_threads(1)
	yield
	torch.set_num_threads(threads)
