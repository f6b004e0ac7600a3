"""The deduplication index: datasketch's LSHBloom semantics, exact duplicates, seeds, sizing."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from dimgpt.config import QualityConfig
from dimgpt.data import quality
from dimgpt.data.dedup import EXACT, KEPT, NEAR, Deduplicator, band_keys, index_bytes, wrongly_dropped
from dimgpt.data.sources import document_hash


def signatures(texts: list[str], settings: QualityConfig) -> np.ndarray:
	"""The signature rows create-data stores: the exact hash's two halves, then the MinHash."""
	rows = np.empty((len(texts), 2 + settings.dedup_permutations), dtype=np.uint32)
	for i, text in enumerate(texts):
		key = document_hash(text)
		rows[i, 0], rows[i, 1] = key & 0xFFFFFFFF, key >> 32
		rows[i, 2:] = quality.minhash(text, settings.dedup_permutations).hashvalues
	return rows


def texts_with_planted_copies(rng: np.random.Generator) -> tuple[list[str], set[int], set[int]]:
	"""60 distinct documents of random French-like words, then near copies (one word in 60 changed) and exact
	copies of some of them; (texts, near copies' indices, exact copies' indices)."""
	words = [f"mot{i}" for i in range(3000)]
	texts = [" ".join(rng.choice(words, 300)) for _ in range(60)]
	near, exact = set(), set()
	for source in (3, 17, 41, 58):
		tokens = texts[source].split()
		tokens[150] = "changé"
		near.add(len(texts))
		texts.append(" ".join(tokens))
	for source in (5, 17):
		exact.add(len(texts))
		texts.append(texts[source])
	return texts, near, exact


def test_band_keys_are_datasketch_band_hashes() -> None:
	from datasketch.lsh_bloom import BloomTable

	settings = QualityConfig()
	rng = np.random.default_rng(0)
	minhashes = rng.integers(0, 2**32, size=(50, settings.dedup_permutations), dtype=np.uint32)
	keys = band_keys(minhashes, settings.dedup_bands)
	rows = settings.dedup_permutations // settings.dedup_bands
	table = BloomTable.__new__(BloomTable)  # only its band hash, no filter
	for d in range(len(minhashes)):
		for band in range(settings.dedup_bands):
			assert int(keys[d, band]) == table._band_hash(minhashes[d, band * rows : (band + 1) * rows].tolist())


@pytest.mark.parametrize("processes", [1, 3])
def test_planted_duplicates_and_the_library_index_agree(processes: int) -> None:
	"""Each planted near copy is NEAR, each exact copy EXACT, the rest KEPT; and every fate equals what
	datasketch's MinHashLSHBloom answers when fed the same documents through its own query / insert."""
	from datasketch import LeanMinHash, MinHashLSHBloom

	settings = QualityConfig()
	texts, near, exact = texts_with_planted_copies(np.random.default_rng(1))
	rows = signatures(texts, settings)
	dedup = Deduplicator(settings, capacity=10_000, processes=processes)
	try:
		fates = np.concatenate([dedup.check(rows[:30]), dedup.check(rows[30:])])  # two pieces
	finally:
		dedup.close()
	assert set(np.flatnonzero(fates == NEAR)) == near
	assert set(np.flatnonzero(fates == EXACT)) == exact
	assert (fates == KEPT).sum() == len(texts) - len(near) - len(exact)
	with warnings.catch_warnings():
		warnings.simplefilter("ignore", RuntimeWarning)
		library = MinHashLSHBloom(
			num_perm=settings.dedup_permutations,
			params=(settings.dedup_bands, 8),
			n=10_000,
			fp=settings.dedup_false_positive,
		)
	seen: set[bytes] = set()
	for i, row in enumerate(rows):
		if row[:2].tobytes() in seen:
			assert fates[i] == EXACT
			continue
		seen.add(row[:2].tobytes())
		minhash = LeanMinHash(seed=1, hashvalues=row[2:], scheme="affine32")
		assert (fates[i] == NEAR) == library.query(minhash)
		library.insert(minhash)  # every document enters the index, kept or not


def test_a_resumed_index_decides_like_an_uninterrupted_one() -> None:
	"""remember() of what was seen before gives the same fates to what follows (same seeds, same bits)."""
	settings = QualityConfig()
	texts, _, _ = texts_with_planted_copies(np.random.default_rng(2))
	rows = signatures(texts, settings)
	fates = []
	for split in (None, 40):
		dedup = Deduplicator(settings, capacity=10_000, processes=2)
		try:
			if split is None:
				fates.append(dedup.check(rows))
			else:
				before = dedup.check(rows[:split])
				dedup.close()
				dedup = Deduplicator(settings, capacity=10_000, processes=1)
				dedup.remember(rows[:split][before != EXACT])  # what the shards and dropped.sig hold
				fates.append(np.concatenate([before, dedup.check(rows[split:])]))
		finally:
			dedup.close()
	assert (fates[0] == fates[1]).all()


def test_index_size_and_wrongly_dropped_share_at_the_release_scale() -> None:
	"""The default settings keep the index under 2 GB at 52M documents, with few documents wrongly dropped."""
	settings = QualityConfig()
	assert index_bytes(settings, 52_000_000) < 2e9
	assert wrongly_dropped(settings, 52_000_000) < 1e-3
	assert wrongly_dropped(settings, 52_000_000, 26_000_000) < wrongly_dropped(settings, 52_000_000)
	off = QualityConfig(near_duplicates=False)
	assert index_bytes(off, 52_000_000) < 0.2e9
