"""The deduplication index: datasketch's LSHBloom semantics, exact duplicates, seeds, sizing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

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


def test_band_keys_collide_only_for_equal_bands() -> None:
	"""Real MinHashes of 20,000 distinct documents: no two share a band key unless their band's values are equal,
	where datasketch's own key (the sum of the values modulo 2^61 - 1) already gives chance collisions."""
	from datasketch.lsh_bloom import BloomTable

	settings = QualityConfig()
	rng = np.random.default_rng(0)
	words = [f"mot{i}" for i in range(20_000)]
	texts = [" ".join(rng.choice(words, 40)) for _ in range(20_000)]
	minhashes = np.stack([quality.minhash(t, settings.dedup_permutations).hashvalues for t in texts]).astype(np.uint32)
	keys = band_keys(minhashes, settings.dedup_bands)
	rows = settings.dedup_permutations // settings.dedup_bands
	table = BloomTable.__new__(BloomTable)  # only its band hash, no filter
	summed = collisions = 0
	for band in range(settings.dedup_bands):
		values = minhashes[:, band * rows : (band + 1) * rows]
		distinct = len(np.unique(values, axis=0))
		collisions += distinct - len(np.unique(keys[:, band]))
		summed += distinct - len(
			{table._band_hash(v) for v in values[:5_000].tolist()}
		)  # a quarter: ~1/16 of the pairs
	assert collisions == 0 and summed > 0
	assert (band_keys(minhashes[:1], settings.dedup_bands) == keys[:1]).all()  # a function of the values alone


@pytest.mark.parametrize("processes", [1, 3])
def test_planted_duplicates_and_the_library_index_agree(processes: int) -> None:
	"""Each planted near copy is NEAR, each exact copy EXACT, the rest KEPT; and every fate equals what
	datasketch's MinHashLSH (exact band tables) answers when fed the same documents through its own query / insert."""
	from datasketch import LeanMinHash, MinHashLSH

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
	library = MinHashLSH(num_perm=settings.dedup_permutations, params=(settings.dedup_bands, 8))
	seen: set[bytes] = set()
	for i, row in enumerate(rows):
		if row[:2].tobytes() in seen:
			assert fates[i] == EXACT
			continue
		seen.add(row[:2].tobytes())
		minhash = LeanMinHash(seed=1, hashvalues=row[2:], scheme="affine32")
		assert (fates[i] == NEAR) == bool(library.query(minhash))
		library.insert(i, minhash)  # every document enters the index, kept or not


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


def test_index_processes_end_when_the_main_process_is_killed() -> None:
	"""A killed create-data (SIGKILL, out of memory) leaves no index process behind holding its filters."""
	script = (
		"from dimgpt.config import QualityConfig\n"
		"from dimgpt.data.dedup import Deduplicator\n"
		"import time\n"
		"dedup = Deduplicator(QualityConfig(), capacity=10_000, processes=3)\n"
		"print(' '.join(str(p.pid) for p in dedup.processes), flush=True)\n"
		"time.sleep(60)\n"
	)
	root = Path(__file__).resolve().parents[1]
	main = subprocess.Popen([sys.executable, "-c", script], cwd=root, stdout=subprocess.PIPE, text=True)
	pids = [int(p) for p in main.stdout.readline().split()]
	assert len(pids) == 3
	main.send_signal(signal.SIGKILL)
	main.wait()
	deadline = time.time() + 10
	while time.time() < deadline and any(alive(pid) for pid in pids):
		time.sleep(0.05)
	left = [pid for pid in pids if alive(pid)]
	for pid in left:  # do not leave them running when the test fails
		os.kill(pid, signal.SIGKILL)
	assert not left


def alive(pid: int) -> bool:
	"""Whether process `pid` runs (a zombie, ended but not yet reaped, does not)."""
	try:
		return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0] != "Z"
	except (FileNotFoundError, IndexError):
		return False


def test_index_size_and_wrongly_dropped_share_at_the_release_scale() -> None:
	"""The default settings keep the index under 2 GB at 52M documents, with few documents wrongly dropped."""
	settings = QualityConfig()
	assert index_bytes(settings, 52_000_000) < 2e9
	assert wrongly_dropped(settings, 52_000_000) < 1e-3
	assert wrongly_dropped(settings, 52_000_000, 26_000_000) < wrongly_dropped(settings, 52_000_000)
	off = QualityConfig(near_duplicates=False)
	assert index_bytes(off, 52_000_000) < 0.2e9
