"""Loaders: DimensionGPT windows, mix proportions, determinism, exact resume, ranks, loss weights."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dimgpt.data.instruct import ANSWER, PROMPT, role_marks
from dimgpt.data.loader import PretrainLoader
from dimgpt.data.store import FORMAT_VERSION, ShardWriter, StoreError, verify_dataset, write_json
from dimgpt.data.tokenizer import ASSISTANT, END_OF_TEXT, START_OF_TEXT, USER
from dimgpt.errors import NotFoundError

# source a uses ids [10, 500), source b [500, 1000): a token tells which source it came from
RANGES = {"a": (10, 500), "b": (500, 1000)}


def documents(name: str, n: int, seed: int) -> list[np.ndarray]:
	low, high = RANGES[name]
	rng = np.random.default_rng(seed)
	return [
		np.concatenate([[START_OF_TEXT], rng.integers(low, high, size=int(rng.integers(5, 300))), [END_OF_TEXT]])
		for _ in range(n)
	]


def write_source(root: Path, name: str, splits: dict[str, list[np.ndarray]], multiplier: float) -> None:
	directory = root / "pretrain" / name
	info = {}
	for split, docs in splits.items():
		writer = ShardWriter(directory, split, dtype=np.uint16, shard_tokens=2_000, meta={"source": name})
		for d in docs:
			writer.add(d)
		writer.finish()
		info[split] = {"shards": writer.index, "documents": len(docs), "tokens": sum(len(d) for d in docs)}
	write_json(directory / "source.json", {"format_version": FORMAT_VERSION, "multiplier": multiplier, "splits": info})


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
	root = tmp_path_factory.mktemp("dataset")
	docs = {"a": documents("a", 400, 1), "b": documents("b", 100, 2)}
	write_source(root, "a", {"train": docs["a"][:390], "validation": docs["a"][390:]}, multiplier=1.0)
	write_source(root, "b", {"train": docs["b"][:95], "validation": docs["b"][95:]}, multiplier=3.0)
	(root / "data.json").write_text(json.dumps({"vocab_size": 4_096, "pretrain": {"a": {}, "b": {}}}))
	return root


def source_of(token: int) -> str:
	return next(name for name, (low, high) in RANGES.items() if low <= token < high)


def stored_documents(root: Path, split: str) -> set[tuple[int, ...]]:
	out = set()
	for name in RANGES:
		for stem in sorted((root / "pretrain" / name).glob(f"{split}_*.bin")):
			tokens = np.fromfile(stem, dtype=np.uint16)
			offsets = np.load(stem.with_suffix(".idx.npy"))
			out |= {tuple(tokens[a:b].tolist()) for a, b in itertools.pairwise(offsets)}
	return out


def test_windows_are_a_document_tail_then_whole_documents(dataset: Path) -> None:
	loader = PretrainLoader(dataset, "train", batch_size=8, context_length=256, seed=3)
	whole = stored_documents(dataset, "train")
	for _ in range(5):
		x, y, w = loader.next_batch()
		assert x.shape == y.shape == w.shape == (8, 256)
		assert x.dtype == y.dtype == torch.int64 and w.dtype == torch.float32
		assert torch.equal(x[:, 1:], y[:, :-1])  # y is x shifted by one
		assert torch.all(w == 1.0)  # no padding in pretraining windows
		for row in torch.cat([x, y[:, -1:]], dim=1).tolist():
			ends = [i for i, t in enumerate(row) if t == END_OF_TEXT]
			assert ends, "a window always reaches the end of its first document"
			# the first document's tail: no start-of-text before its end
			assert START_OF_TEXT not in row[1 : ends[0]]
			# then whole stored documents, the last one possibly cut
			starts = [e + 1 for e in ends]
			for begin, end in zip(starts, [*ends[1:], None]):
				if end is None or begin >= len(row):
					continue
				assert tuple(row[begin : end + 1]) in whole
	loader.close()


def test_source_mix_follows_size_times_multiplier(dataset: Path) -> None:
	loader = PretrainLoader(dataset, "train", batch_size=64, context_length=32, seed=0)
	tokens = {name: 0 for name in RANGES}
	for name in RANGES:
		for stem in (dataset / "pretrain" / name).glob("train_*.bin"):
			tokens[name] += stem.stat().st_size // 2
	expected = tokens["b"] * 3.0 / (tokens["b"] * 3.0 + tokens["a"])
	first = []
	for _ in range(40):
		x, _, _ = loader.next_batch()
		first += [source_of(next(t for t in row if t >= 10)) for row in x.tolist()]  # the first text token
	share = sum(s == "b" for s in first) / len(first)
	n = len(first)
	assert abs(share - expected) < 4 * (expected * (1 - expected) / n) ** 0.5
	loader.close()


def test_same_seed_same_batches_and_exact_resume(dataset: Path) -> None:
	first = PretrainLoader(dataset, "train", 4, 64, seed=7)
	for _ in range(3):
		first.next_batch()
	state = json.loads(json.dumps(first.state_dict()))  # JSON-able
	expected = [first.next_batch() for _ in range(5)]  # the thread has prefetched ahead by now
	first.close()
	second = PretrainLoader(dataset, "train", 4, 64, seed=7)
	second.load_state_dict(state)
	got = [second.next_batch() for _ in range(5)]
	assert all(torch.equal(a, b) for e, g in zip(expected, got) for a, b in zip(e, g))
	# rewinding the same loader works too, whatever it had prefetched
	second.load_state_dict(state)
	assert torch.equal(second.next_batch()[0], expected[0][0])
	second.close()
	other = PretrainLoader(dataset, "train", 4, 64, seed=8)
	assert not torch.equal(other.next_batch()[0], PretrainLoader(dataset, "train", 4, 64, seed=7).next_batch()[0])
	other.close()


def test_ranks_draw_different_data(dataset: Path) -> None:
	rank0 = PretrainLoader(dataset, "train", 4, 64, seed=0, rank=0, world_size=2)
	rank1 = PretrainLoader(dataset, "train", 4, 64, seed=0, rank=1, world_size=2)
	for _ in range(3):
		assert not torch.equal(rank0.next_batch()[0], rank1.next_batch()[0])
	rank0.close()
	rank1.close()
	with pytest.raises(ValueError, match="rank"):
		PretrainLoader(dataset, "train", 4, 64, rank=2, world_size=2)


def test_validation_split_reads_only_validation_documents(dataset: Path) -> None:
	loader = PretrainLoader(dataset, "validation", 4, 64, seed=0)
	validation, train = stored_documents(dataset, "validation"), stored_documents(dataset, "train")
	x, y, _ = loader.next_batch()
	for row in torch.cat([x, y[:, -1:]], dim=1).tolist():
		ends = [i for i, t in enumerate(row) if t == END_OF_TEXT]
		for begin, end in zip([e + 1 for e in ends], ends[1:]):
			assert tuple(row[begin : end + 1]) in validation
			assert tuple(row[begin : end + 1]) not in train
	loader.close()


def test_documents_a_merge_dropped_are_never_read(tmp_path: Path) -> None:
	"""A merged manifest points at a part's shards and lists documents to skip: the loader reads every other
	document, whole, and never one of the dropped (they use ids [2000, 2100): any such token is a failure)."""
	part = tmp_path / "parts" / "0-of-1" / "pretrain" / "a"
	rng = np.random.default_rng(5)
	docs = documents("a", 300, 4)
	dropped = set(rng.choice(len(docs), size=60, replace=False).tolist()) | {0, len(docs) - 1}
	for i in dropped:
		docs[i] = np.concatenate([[START_OF_TEXT], rng.integers(2000, 2100, size=len(docs[i]) - 2), [END_OF_TEXT]])
	writer = ShardWriter(part, "train", dtype=np.uint16, shard_tokens=2_000, meta={"source": "a"})
	for d in docs:
		writer.add(d)
	writer.finish()
	sizes = [json.loads((part / f"train_{i:05d}.json").read_text())["documents"] for i in range(writer.index)]
	starts = np.cumsum([0, *sizes])
	lists = [sorted(i - int(starts[k]) for i in dropped if starts[k] <= i < starts[k + 1]) for k in range(len(sizes))]
	assert lists[0] and lists[-1]  # the first and the last document of the split are dropped
	kept = [d for i, d in enumerate(docs) if i not in dropped]
	directory = tmp_path / "pretrain" / "a"
	directory.mkdir(parents=True)
	write_json(
		directory / "source.json",
		{
			"format_version": FORMAT_VERSION,
			"multiplier": 1.0,
			"files": {
				"train": [f"../../parts/0-of-1/pretrain/a/train_{i:05d}" for i in range(len(sizes))],
				"validation": [],
			},
			"dropped": {"train": lists, "validation": []},
			"splits": {
				"train": {"documents": len(kept), "tokens": sum(len(d) for d in kept)},
				"validation": {"documents": 0, "tokens": 0},
			},
		},
	)
	(tmp_path / "data.json").write_text(json.dumps({"vocab_size": 4_096, "pretrain": {"a": {}}}))
	assert verify_dataset(tmp_path, progress=False) == (len(sizes), [])
	loader = PretrainLoader(tmp_path, "train", 16, 128, seed=0)
	(source,) = loader.sources
	assert source.documents == len(kept) and source.tokens == sum(len(d) for d in kept)
	whole = [source.shards[k].tokens[a:b].tolist() for k, a, b in map(source.locate_document, range(source.documents))]
	assert whole == [d.tolist() for d in kept]  # every kept document, in order, none of the dropped
	at = 0
	for d in kept:  # every token position maps into its own kept document
		k, a, b = source.locate_token(at + len(d) // 2)
		assert source.shards[k].tokens[a:b].tolist() == d[len(d) // 2 :].tolist()
		at += len(d)
	for _ in range(30):
		x, y, _ = loader.next_batch()
		assert not ((x >= 2000) & (x < 2100)).any() and not ((y >= 2000) & (y < 2100)).any()
	loader.close()
	# a drop list that does not fit its shards is named, with the fix
	write_json(
		directory / "source.json",
		{**json.loads((directory / "source.json").read_text()), "dropped": {"train": lists[:-1]}},
	)
	with pytest.raises(StoreError, match=r"one drop list per file.*merge-data"):
		PretrainLoader(tmp_path, "train", 16, 128, seed=0)


def test_missing_dataset_is_a_clear_error(tmp_path: Path) -> None:
	with pytest.raises(NotFoundError, match="create-data"):
		PretrainLoader(tmp_path, "train", 4, 64)


def test_worker_errors_reach_the_caller(dataset: Path) -> None:
	loader = PretrainLoader(dataset, "train", 4, 64)
	loader.make_batch = lambda step: (_ for _ in ()).throw(RuntimeError("boom"))  # a failing batch
	with pytest.raises(RuntimeError, match="boom"):
		loader.next_batch()
	loader.close()


# --- instruction windows ---------------------------------------------------------------------------


def test_role_marks_rule() -> None:
	tokens = np.array([START_OF_TEXT, USER, 11, 12, ASSISTANT, 600, 601, USER, 13, ASSISTANT, 602, END_OF_TEXT])
	marks = role_marks(tokens)
	expected = [PROMPT, PROMPT, PROMPT, PROMPT, PROMPT, ANSWER, ANSWER, ANSWER, PROMPT, PROMPT, ANSWER, ANSWER]
	assert marks.tolist() == expected
