"""The deduplication index of create-data: exact and near duplicates over every document seen so far.

Exact duplicates: a Bloom filter of the documents' 64-bit hashes (pybloomfilter, 1e-6 false positives at
capacity: about 29 bits a document).

Near duplicates: datasketch's `MinHashLSHBloom` (LSHBloom: one Bloom filter per LSH band instead of
MinHashLSH's per-band tables of document keys; 112 permutations in 14 bands of 8, as before). A document
is a near duplicate when one of its band keys was seen in an earlier document (kept or itself dropped:
every document that is not an exact duplicate enters the index, so each band is independent of the others
and a chain of near copies is dropped whole, as FineWeb's clustering does). The bands are split over a
few index processes that run beside the main process: the band keys of a piece are computed at once with
numpy (`band_keys`: a 64-bit hash of the band's values; not the library's own key, their sum, which collides
at scale), each process answers for its bands, the main process ORs the answers; the decisions are
datasketch's `MinHashLSH` (exact band tables) up to the Bloom filters' false positives (tested).

Memory is fixed at creation by the capacity (the documents the index is sized for) and the false-positive
rate of each band's filter; `index_bytes` gives it and `wrongly_dropped` the expected share of documents
dropped for a false positive. Every seed is fixed (pybloomfilter draws its hash seeds from `random`), so a
run, its resumption and its parts make the same decisions on any machine.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing as mp
import random
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from dimgpt.config import QualityConfig
from dimgpt.errors import UsageError

BAND_SEED = 0x9E3779B97F4A7C15  # the band keys' starting value (any fixed odd constant)
EXACT_FALSE_POSITIVE = 1e-6  # a unique document taken for an exact duplicate
BYTES_PER_DOCUMENT = 4_000  # capacity estimate: one document per this many bytes of source files
UNSIZED_SOURCE_DOCUMENTS = 10_000_000  # a hub stream's size is unknown: the documents it is assumed to hold
MIN_CAPACITY = 1_000_000  # small runs get this much (a few tens of MB of filters)

# a document's fate
KEPT, EXACT, NEAR = 0, 1, 2


def band_keys(minhashes: np.ndarray, bands: int) -> np.ndarray:
	"""(documents, bands) uint64: each document's key in each LSH band (band i: hash values i*r .. (i+1)*r - 1),
	for many documents at once: the band's values mixed one after the other into a 64-bit hash (splitmix64's
	finaliser), so that two documents share a key only when the band's values are equal (or with chance 2^-64).

	Not `MinHashLSHBloom`'s own key, the sum of the values modulo 2^61 - 1: MinHash values are minima, small
	and alike, so their sums crowd into a narrow range and distinct documents share keys; the documents flagged by
	chance grow with the square of the corpus (0.1 % of 25,000 real French chunks, most of a 52M-document corpus)."""
	rows = minhashes.shape[1] // bands
	banded = minhashes[:, : bands * rows].astype(np.uint64).reshape(len(minhashes), bands, rows)
	keys = np.full(banded.shape[:2], BAND_SEED, dtype=np.uint64)
	for j in range(rows):
		keys = _mix(keys ^ banded[:, :, j])
	return keys


def _mix(x: np.ndarray) -> np.ndarray:
	"""splitmix64's finaliser on uint64 (products wrap modulo 2^64): every input bit reaches every output bit."""
	x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
	x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
	return x ^ (x >> np.uint64(31))


def _exact_keys(signatures: np.ndarray) -> list[int]:
	"""The documents' 64-bit hashes, from the two first columns of their signatures."""
	return (signatures[:, 0].astype(np.uint64) | signatures[:, 1].astype(np.uint64) << np.uint64(32)).tolist()


def band_groups(bands: int) -> list[list[int]]:
	"""The bands in groups of 2 (3 for the last when odd): one `MinHashLSHBloom` each, its own seed.

	Fixed groups, whatever the number of index processes: the filters' seeds (hence their false positives)
	do not depend on the machine's cores."""
	if bands < 2:
		raise UsageError(f"dedup_bands={bands}: near-duplicate removal needs at least 2 LSH bands (14 by default)")
	groups = [list(range(i, i + 2)) for i in range(0, bands - bands % 2, 2)]
	if bands % 2:
		groups[-1].append(bands - 1)
	return groups


def _seeded(seed: int, build: Callable[[], Any]) -> Any:
	"""build() with Python's `random` seeded (pybloomfilter draws hash seeds from it), then restored."""
	state = random.getstate()
	random.seed(seed)
	try:
		return build()
	finally:
		random.setstate(state)


def _exact_filter(capacity: int) -> Any:
	import pybloomfilter

	return _seeded(0, lambda: pybloomfilter.BloomFilter(capacity, EXACT_FALSE_POSITIVE))


def _group_index(group: int, size: int, rows: int, capacity: int, false_positive: float) -> Any:
	from datasketch import MinHashLSHBloom

	with warnings.catch_warnings():  # no save_dir: the index lives in memory, rebuilt from signatures on resume
		warnings.simplefilter("ignore", RuntimeWarning)
		return _seeded(
			1 + group,
			lambda: MinHashLSHBloom(num_perm=size * rows, params=(size, rows), n=capacity, fp=false_positive),
		)


def _serve(
	connection: Any,
	groups: list[tuple[int, list[int]]],
	rows: int,
	capacity: int,
	false_positive: float,
	inherited: tuple[Any, ...] = (),
) -> None:
	"""An index process: for each batch of band keys received, add them and answer which documents had a
	band key seen before (in its bands), in order.

	inherited: the main process's ends of the pipes, closed here first: a forked copy held open would keep
	`recv` waiting forever once the main process is killed (the process, and its filters' memory, left behind)."""
	for other in inherited:
		other.close()
	filters = []  # (column in the keys, Bloom filter)
	for group, bands in groups:
		lsh = _group_index(group, len(bands), rows, capacity, false_positive)
		filters += [(band, table.bloom_filter) for band, table in zip(bands, lsh.hashtables)]
	columns = [band for band, _ in filters]
	blooms = [bloom for _, bloom in filters]
	while True:
		try:
			keys = connection.recv()
		except (EOFError, OSError):  # the main process is gone
			return
		if keys is None:
			return
		hits = np.zeros(len(keys), dtype=bool)
		for i, row in enumerate(keys[:, columns].tolist()):
			for bloom, key in zip(blooms, row):
				if bloom.add(key):  # True when the key was already there: add every band all the same
					hits[i] = True
		connection.send(hits)


def index_processes(workers: int) -> int:
	"""Index processes beside `workers` workers: one per 2 (at most one per band group). Each band costs a few
	microseconds a document (13 random memory accesses in a filter of 125 MB at 52M documents), the main process
	waits on the busiest index process, and the work, spread thin, takes little from the workers."""
	return max(1, workers // 2)


class Deduplicator:
	"""Exact and near duplicates over every document checked or remembered so far (see the module)."""

	def __init__(self, settings: QualityConfig, capacity: int, processes: int = 1) -> None:
		self.capacity = capacity
		self.seen = 0  # documents that entered the index
		self.exact = _exact_filter(capacity)
		self.bands = settings.dedup_bands
		self.connections: list[Any] = []
		self.processes: list[Any] = []
		if settings.near_duplicates:
			groups = list(enumerate(band_groups(self.bands)))
			count = max(1, min(processes, len(groups)))
			context = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
			rows = settings.dedup_permutations // self.bands
			for p in range(count):
				mine, theirs = context.Pipe()
				args = (
					theirs,
					groups[p::count],
					rows,
					capacity,
					settings.dedup_false_positive,
					(mine, *self.connections),
				)
				process = context.Process(target=_serve, args=args, daemon=True, name=f"dedup-index-{p}")
				process.start()
				theirs.close()
				self.connections.append(mine)
				self.processes.append(process)

	def check(self, signatures: np.ndarray) -> np.ndarray:
		"""The fate (KEPT, EXACT or NEAR) of each document of a batch, in order; every document that is not an
		exact duplicate enters the index (a later document is compared with it)."""
		fates = np.zeros(len(signatures), dtype=np.int8)
		add = self.exact.add
		for i, key in enumerate(_exact_keys(signatures)):
			if add(key):  # True when already there
				fates[i] = EXACT
		new = np.flatnonzero(fates == KEPT)
		self.seen += len(new)
		if self.connections:
			fates[new[self._near(signatures[new])]] = NEAR
		return fates

	def overfull(self) -> str | None:
		"""A warning when more documents entered the index than it was sized for, else None."""
		if self.seen <= self.capacity:
			return None
		return (
			f"the deduplication index was sized for {self.capacity:,} documents and holds {self.seen:,}: more are "
			f"wrongly dropped than planned; next time give --quality dedup_capacity={self.seen}"
		)

	def remember(self, signatures: np.ndarray) -> None:
		"""Add documents an earlier run put in the index (their signatures, from the shards' `.sig.npy` and
		`dropped.sig`), every one whatever the filters answer now: the same bits as when that run added them."""
		for start in range(0, len(signatures), 100_000):
			batch = signatures[start : start + 100_000]
			self.exact.update(_exact_keys(batch))
			self.seen += len(batch)
			if self.connections:
				self._near(batch)

	def _near(self, signatures: np.ndarray) -> np.ndarray:
		keys = band_keys(signatures[:, 2:], self.bands)
		for connection in self.connections:
			connection.send(keys)
		hits = np.zeros(len(keys), dtype=bool)
		for connection in self.connections:
			hits |= connection.recv()
		return hits

	def __enter__(self) -> Deduplicator:
		return self

	def __exit__(self, *_: object) -> None:
		self.close()

	def close(self) -> None:
		for connection in self.connections:
			with contextlib.suppress(OSError):  # that index process is gone already
				connection.send(None)
		for process in self.processes:
			process.join(timeout=5)
			if process.is_alive():
				process.terminate()
		self.connections, self.processes = [], []


def index_bytes(settings: QualityConfig, capacity: int) -> int:
	"""Bytes of the index at `capacity` documents: the exact filter and one filter per band (optimal Bloom
	filters: -n ln p / ln(2)^2 bits, as pybloomfilter sizes them)."""
	bits = lambda p: math.ceil(-capacity * math.log(p) / math.log(2) ** 2)  # noqa: E731
	near = settings.dedup_bands * bits(settings.dedup_false_positive) if settings.near_duplicates else 0
	return (bits(EXACT_FALSE_POSITIVE) + near) // 8


def wrongly_dropped(settings: QualityConfig, capacity: int, documents: int | None = None) -> float:
	"""Expected share of the first `documents` (default: capacity) wrongly dropped for a false positive of a
	filter: at each step the chance that one of the bands' filters (or the exact one) answers "seen" for a
	new document, averaged over the filling (optimal filters: k hash functions, m bits each)."""
	documents = capacity if documents is None else documents

	def rate(p: float, n: np.ndarray) -> np.ndarray:
		m = -capacity * math.log(p) / math.log(2) ** 2
		k = max(1, round(m / capacity * math.log(2)))
		return (1 - np.exp(-k * n / m)) ** k

	filled = np.linspace(0, documents, 1001)
	false = rate(EXACT_FALSE_POSITIVE, filled)
	if settings.near_duplicates:
		false = 1 - (1 - false) * (1 - rate(settings.dedup_false_positive, filled)) ** settings.dedup_bands
	return float(false.mean())


def estimate_capacity(settings: QualityConfig, sizes: list[int], parts: int = 1) -> int:
	"""The documents to size the index for: `dedup_capacity`, or one per `BYTES_PER_DOCUMENT` bytes of the
	sources' files (`sizes`: one total per source, 0 when unknown: a hub stream, split among `parts`)."""
	if settings.dedup_capacity:
		return settings.dedup_capacity
	unsized = sum(1 for size in sizes if size == 0) * UNSIZED_SOURCE_DOCUMENTS // parts
	return max(MIN_CAPACITY, sum(sizes) // BYTES_PER_DOCUMENT + unsized)
