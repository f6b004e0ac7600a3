"""Shared test fixtures: the tiny dataset once per session, the real French data when present.

Plain helpers (small configs, loaders) are in support.py.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


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
