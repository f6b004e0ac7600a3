"""Token store: shard boundaries, resume bookkeeping, refusal of foreign shards, the validation split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dimgpt.data.store import (
	BLOCK_BYTES,
	SAMPLED_BLOCKS,
	ShardWriter,
	StoreError,
	complete_shards,
	held_out,
	open_shard,
	read_json,
	shard_stem,
	token_dtype,
	validation_count,
	verify_shard,
)
from dimgpt.data.tokenizer import END_OF_TEXT, START_OF_TEXT

SETTINGS = {"shard_tokens": 500}


def random_documents(n: int, seed: int = 0, vocab: int = 1000) -> list[np.ndarray]:
	"""Wrapped documents of random lengths (some longer than a shard)."""
	rng = np.random.default_rng(seed)
	docs = []
	for _ in range(n):
		body = rng.integers(
			10, vocab, size=int(rng.choice([rng.integers(1, 80), rng.integers(400, 900)], p=[0.9, 0.1]))
		)
		docs.append(np.concatenate([[START_OF_TEXT], body, [END_OF_TEXT]]).astype(np.uint16))
	return docs


def write(directory: Path, docs: list[np.ndarray], fingerprint: str = "abc", shard_tokens: int = 500) -> list[dict]:
	done: list[dict] = []
	meta = {"source": "s", "tokenizer_fingerprint": fingerprint, "settings": SETTINGS}
	writer = ShardWriter(
		directory, "train", dtype=np.uint16, shard_tokens=shard_tokens, meta=meta, on_shard=done.append
	)
	for d in docs:
		writer.add(d, characters=3 * len(d))
	writer.finish()
	return done


def test_shards_hold_every_document_once_and_stay_bounded(tmp_path: Path) -> None:
	docs = random_documents(300)
	manifests = write(tmp_path, docs)
	assert len(manifests) > 5
	stored = []
	for m in manifests:
		shard = open_shard(shard_stem(tmp_path, "train", m["index"]), m)
		assert m["tokens"] <= 500 or m["documents"] == 1  # bounded, unless one document is longer
		assert shard.offsets[0] == 0 and np.all(np.diff(shard.offsets) > 0)
		stored += [np.asarray(shard.tokens[a:b]) for a, b in zip(shard.offsets[:-1], shard.offsets[1:])]
	assert len(stored) == len(docs)
	assert all(np.array_equal(a, b) for a, b in zip(stored, docs))
	assert sum(m["tokens"] for m in manifests) == sum(len(d) for d in docs)
	assert [m["first_document"] for m in manifests] == list(np.cumsum([0] + [m["documents"] for m in manifests])[:-1])
	assert sum(m["characters"] for m in manifests) == 3 * sum(len(d) for d in docs)
	assert not list(tmp_path.glob("*.tmp"))


def test_complete_shards_keeps_the_complete_prefix_and_drops_the_rest(tmp_path: Path) -> None:
	manifests = write(tmp_path, random_documents(200))
	# an interrupted run: shard 3's manifest never written, a partial data file left behind
	shard_stem(tmp_path, "train", 3).with_suffix(".json").unlink()
	shard_stem(tmp_path, "train", 9).with_suffix(".bin.tmp").write_bytes(b"\0" * 10)
	done = complete_shards(tmp_path, "train", "abc", SETTINGS)
	assert [m["index"] for m in done] == [0, 1, 2]
	assert done == manifests[:3]
	left = {p.name for p in tmp_path.iterdir()}
	assert "train_00003.bin" not in left and "train_00004.json" not in left and "train_00009.bin.tmp" not in left
	assert {"train_00002.bin", "train_00002.idx.npy", "train_00002.json"} <= left


def test_truncated_shard_is_not_counted_complete(tmp_path: Path) -> None:
	write(tmp_path, random_documents(200))
	path = shard_stem(tmp_path, "train", 1).with_suffix(".bin")
	path.write_bytes(path.read_bytes()[:-2])
	assert len(complete_shards(tmp_path, "train", "abc", SETTINGS)) == 1


def test_foreign_tokenizer_and_other_settings_are_refused(tmp_path: Path) -> None:
	write(tmp_path, random_documents(50))
	with pytest.raises(StoreError, match="another tokenizer") as error:
		complete_shards(tmp_path, "train", "other-fingerprint", SETTINGS)
	assert "train_00000.json" in str(error.value) and "delete" in str(error.value)
	with pytest.raises(StoreError, match="other settings"):
		complete_shards(tmp_path, "train", "abc", {"shard_tokens": 1000})


def test_open_shard_detects_corruption(tmp_path: Path) -> None:
	manifests = write(tmp_path, random_documents(50))
	stem = shard_stem(tmp_path, "train", 0)
	stem.with_suffix(".bin").write_bytes(b"\0" * 4)
	with pytest.raises(StoreError, match="truncated"):
		open_shard(stem, manifests[0])
	assert read_json(stem.with_suffix(".json")) == manifests[0]
	stem.with_suffix(".json").write_text("{not json")
	with pytest.raises(StoreError, match="corrupt"):
		read_json(stem.with_suffix(".json"))


def test_dtype_follows_the_vocabulary_size() -> None:
	assert token_dtype(32_000) == np.uint16
	assert token_dtype(65_536) == np.uint16
	assert token_dtype(65_537) == np.uint32


@pytest.mark.parametrize("n", [1, 2, 3, 7, 100, 2_475, 100_003])
def test_validation_split_size_and_spread(n: int) -> None:
	held = validation_count(n, 0.001, 2)
	assert held == min(max(2, round(n * 0.001)), n // 2)
	mask = held_out(np.arange(n), n, held)
	assert mask.sum() == held
	if held >= 2:
		gaps = np.diff(np.flatnonzero(mask))
		assert gaps.min() >= n // held - 1  # spread over the stream, not bunched at its start
	assert all(bool(held_out(i, n, held)) == mask[i] for i in range(0, n, max(1, n // 50)))


def test_a_changed_token_is_found_by_the_checksum(tmp_path: Path) -> None:
	"""Silent corruption: 100 tokens changed to other valid ids keep the size; the checksum names the shard."""
	manifests = write(tmp_path, random_documents(300), shard_tokens=5_000)
	stem = shard_stem(tmp_path, "train", 1)
	tokens = np.fromfile(stem.with_suffix(".bin"), dtype=np.uint16)
	tokens[200:300] = (tokens[200:300] + 1) % 1000 + 10
	tokens.tofile(stem.with_suffix(".bin"))
	for sample in (None, SAMPLED_BLOCKS):  # verify-data and create-data's resume; opening for training
		with pytest.raises(StoreError, match="does not match its checksum") as error:
			verify_shard(stem, manifests[1], sample=sample)
		assert "train_00001.bin" in str(error.value) and "run create-data again" in str(error.value)
	with pytest.raises(StoreError, match=r"train_00001\.bin"):
		open_shard(stem, manifests[1])
	verify_shard(shard_stem(tmp_path, "train", 0), manifests[0])
	# resuming keeps the shards before the damaged one and makes it again
	assert [m["index"] for m in complete_shards(tmp_path, "train", "abc", SETTINGS)] == [0]
	assert not stem.with_suffix(".bin").exists()


def test_sampled_check_reads_a_bounded_number_of_blocks(tmp_path: Path) -> None:
	"""A shard of many blocks: opening checks SAMPLED_BLOCKS of them (first and last always)."""
	docs = [np.full(BLOCK_BYTES // 2, 11 + i, dtype=np.uint16) for i in range(20)]  # 20 blocks of 1 MiB
	(manifest,) = write(tmp_path, docs, shard_tokens=10**9)
	assert len(manifest["checksum"]["bin"]) == 20
	stem = shard_stem(tmp_path, "train", 0)
	with open(stem.with_suffix(".bin"), "r+b") as f:
		f.seek(19 * BLOCK_BYTES + 10)  # the last block: always checked
		f.write(b"\x07")
	with pytest.raises(StoreError, match="at bytes 19,922,944"):
		open_shard(stem, manifest)
