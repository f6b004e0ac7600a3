"""Shared test fixtures: the real French data in ../shared/data when present."""

from __future__ import annotations

from pathlib import Path

import pytest

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
