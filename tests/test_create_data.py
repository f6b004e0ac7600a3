"""The create-data job end to end on real French text: mix, filters, dedup, split, shards, resume, parts and merge."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dimgpt.config import DataConfig, SourceConfig
from dimgpt.data import quality
from dimgpt.data.create import create_data, held_out, resolve_config, sample_quotas, source_from_spec
from dimgpt.data.sources import document_hash, documents
from dimgpt.data.store import StoreError
from dimgpt.data.tokenizer import END_OF_TEXT, START_OF_TEXT, Tokenizer

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def corpus(corpus_fr: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
	"""Two real sources: the service-public fiches, and 700 law sections plus a duplicate and a short document."""
	root = tmp_path_factory.mktemp("corpus")
	lines = (corpus_fr / "legi_codes.jsonl").read_text(encoding="utf-8").splitlines()[:700]
	lines += [lines[10], json.dumps({"text": "Article court."}), lines[20]]
	(root / "legi.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
	shutil.copy(corpus_fr / "service_public_fiches.jsonl", root / "fiches.jsonl")
	return root


def config_for(corpus: Path, **changes: object) -> DataConfig:
	config = DataConfig(
		vocab_size=600,
		tokenizer_chars=600_000,
		shard_tokens=60_000,
		piece_bytes=400_000,  # several pieces per source: the workers share them
		sources=(
			SourceConfig("legi", path=str(corpus / "legi.jsonl"), multiplier=1.0),
			SourceConfig("fiches", path=str(corpus / "fiches.jsonl"), multiplier=3.0),
		),
		instruct_sources=(),
	)
	return DataConfig(**{**config.__dict__, **changes})


@pytest.fixture(scope="module")
def built(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
	out = tmp_path_factory.mktemp("built")
	summary = create_data(config_for(corpus), out, progress=False)
	return out, summary


def files(directory: Path) -> dict[str, bytes]:
	"""Every file of a dataset folder, data.json without its timings."""
	out = {}
	for path in sorted(directory.rglob("*")):
		if path.is_file() and ".hf_cache" not in path.parts:
			data = path.read_bytes()
			if path.name == "data.json":
				record = json.loads(data)
				record.pop("times")
				record.pop("work")
				record.pop("tokenizer_trained")
				data = json.dumps(record, sort_keys=True).encode()
			out[str(path.relative_to(directory))] = data
	return out


def stored(directory: Path, split: str) -> list[np.ndarray]:
	docs = []
	for stem in sorted(directory.glob(f"{split}_*.bin")):
		dtype = json.loads(stem.with_suffix(".json").read_text())["dtype"]
		tokens = np.fromfile(stem, dtype=dtype)
		offsets = np.load(stem.with_suffix(".idx.npy"))
		docs += [tokens[a:b] for a, b in itertools.pairwise(offsets)]
	return docs


def test_every_document_is_stored_once_in_its_split(built: tuple[Path, dict], corpus: Path) -> None:
	out, summary = built
	tokenizer = Tokenizer.load(out / "vocab.txt")
	config = config_for(corpus)
	source = config.sources[1]
	texts = [t for t in documents(source) if quality.rejection(t, config.quality) is None]
	expected = {document_hash(t): t for t in texts}
	directory = out / "pretrain" / "fiches"
	train, validation = stored(directory, "train"), stored(directory, "validation")
	fiches = summary["pretrain"]["fiches"]
	# the reference stream less the near-duplicates: every other document stored once, in stream order
	assert len(train) + len(validation) == len(texts) - fiches["near_duplicates"] == fiches["documents"]
	decoded = [tokenizer.decode(d[1:-1]) for d in train + validation]
	wanted = [tokenizer.decode(tokenizer.encode(t)) for t in texts]
	assert sorted(decoded) == sorted(d for d in wanted if d in set(decoded))
	assert all(d[0] == START_OF_TEXT and d[-1] == END_OF_TEXT for d in train + validation)
	in_validation = [held_out(h, config.validation_fraction) for h in expected]
	assert len(validation) >= max(config.min_validation_documents, sum(in_validation) - fiches["near_duplicates"])
	assert fiches["splits"]["train"]["shards"] > 1
	assert sum(s["characters"] for s in fiches["splits"].values()) == fiches["characters"]


def test_counts_add_up_and_mix_share(built: tuple[Path, dict]) -> None:
	_, summary = built
	legi = summary["pretrain"]["legi"]
	assert legi["records"] == 703 and legi["short"] == 1 and legi["duplicates"] >= 2
	dropped = legi["short"] + legi["duplicates"] + legi["near_duplicates"] + sum(legi["filtered"].values())
	assert legi["documents"] + dropped == 703
	assert sum(s["documents"] for s in legi["splits"].values()) == legi["documents"]
	weights = {name: s["splits"]["train"]["tokens"] * s["multiplier"] for name, s in summary["pretrain"].items()}
	for name, s in summary["pretrain"].items():
		assert s["share"] == pytest.approx(weights[name] / sum(weights.values()))
	# each filter's examples are documents it drops
	for rule, examples in legi["dropped_examples"].items():
		if rule in quality.RULES:
			assert legi["filtered"][rule] >= len(examples) > 0


def test_tokenizer_sample_follows_size_times_multiplier(built: tuple[Path, dict], corpus: Path) -> None:
	out, summary = built
	config = config_for(corpus)
	record = json.loads((out / "tokenizer_sample.json").read_text())
	quotas = sample_quotas(config, record["sizes"])
	assert record["sizes"] == {
		"legi": (corpus / "legi.jsonl").stat().st_size,
		"fiches": (corpus / "fiches.jsonl").stat().st_size,
	}
	assert quotas["fiches"] / quotas["legi"] == pytest.approx(3 * record["sizes"]["fiches"] / record["sizes"]["legi"])
	sampled = summary["tokenizer_sample"]["characters"]
	for name, quota in quotas.items():
		assert abs(sampled[name] - quota) < 0.1 * quota, (name, sampled[name], quota)
	lines = (out / "tokenizer_sample.txt").read_text(encoding="utf-8").splitlines()
	assert sum(len(line) for line in lines) == sum(sampled.values())


def test_interrupted_then_resumed_equals_uninterrupted(built: tuple[Path, dict], corpus: Path, tmp_path: Path) -> None:
	reference, _ = built
	shards = []

	def stop_after_three(manifest: dict) -> None:
		shards.append(manifest)
		if len(shards) == 3:
			raise KeyboardInterrupt  # what Ctrl-C does in the middle of the encoding

	with pytest.raises(KeyboardInterrupt):
		create_data(config_for(corpus), tmp_path, progress=False, on_shard=stop_after_three)
	assert not (tmp_path / "data.json").exists()
	position = json.loads((tmp_path / "pretrain" / "legi" / "progress.json").read_text())["position"]
	assert position[1] > 0  # the stream stopped inside a piece
	resumed = []
	create_data(config_for(corpus), tmp_path, progress=False, on_shard=resumed.append)
	assert resumed[0]["source"] == "legi" and resumed[0]["index"] > 0  # completed shards were kept
	assert files(tmp_path) == files(reference)


def test_sigkill_then_rerun_equals_uninterrupted(built: tuple[Path, dict], corpus: Path, tmp_path: Path) -> None:
	reference, _ = built
	shutil.copy(reference / "vocab.txt", tmp_path / "vocab.txt")  # the tokenizer stage is covered above
	command = [sys.executable, "-m", "dimgpt", "create-data", "--out", str(tmp_path), "--no-progress"]
	command += ["--preset", "tiny", "--vocab-size", "600", "--tokenizer-chars", "600000", "--shard-tokens", "60000"]
	command += ["--sources", f"legi={corpus / 'legi.jsonl'}@1", f"fiches={corpus / 'fiches.jsonl'}@3", "--instruct"]
	env = {**os.environ, "PYTHONPATH": str(ROOT)}
	process = subprocess.Popen([*command], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
	first = tmp_path / "pretrain" / "legi" / "train_00001.json"
	deadline = time.time() + 120
	while not first.exists() and process.poll() is None and time.time() < deadline:
		time.sleep(0.01)
	process.send_signal(signal.SIGKILL)
	process.wait()
	assert first.exists() and not (tmp_path / "data.json").exists()
	result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
	assert result.returncode == 0, result.stderr
	got, want = files(tmp_path), files(reference)
	del want["tokenizer_sample.txt"], want["tokenizer_sample.json"]  # this run was given the vocab
	assert got.keys() == want.keys()
	for name in got:
		if name == "data.json" or name.endswith("progress.json"):
			continue  # the config names the sources as the command line gave them; positions count its pieces
		assert got[name] == want[name], name


def test_shards_of_another_tokenizer_are_refused(built: tuple[Path, dict], corpus: Path, tmp_path: Path) -> None:
	reference, _ = built
	shutil.copytree(reference, tmp_path / "d")
	with pytest.raises(StoreError, match="another tokenizer") as error:
		create_data(config_for(corpus, vocab_size=700), tmp_path / "d", force_tokenizer=True, progress=False)
	assert "source.json" in str(error.value) and "delete" in str(error.value)
	# a run interrupted before its source manifest: the shards themselves are checked
	(tmp_path / "d" / "pretrain" / "legi" / "source.json").unlink()
	with pytest.raises(StoreError, match="another tokenizer") as error:
		create_data(config_for(corpus, vocab_size=700), tmp_path / "d", progress=False)
	assert "train_00000.json" in str(error.value)


def test_command_line_source_specs() -> None:
	source = source_from_spec("wiki=data/wiki/*.jsonl@4")
	assert (source.name, source.kind, source.path, source.multiplier) == ("wiki", "files", "data/wiki/*.jsonl", 4.0)
	assert source_from_spec("corpus/legi_codes.jsonl").name == "legi_codes"
	hub = source_from_spec("hf:csebuetnlp/xlsum:french@0.3")
	assert (hub.kind, hub.path, hub.hf_config, hub.multiplier) == ("hf", "csebuetnlp/xlsum", "french", 0.3)
	config = resolve_config("tiny", ["corpus-fr"])
	assert [s.name for s in config.sources][:2] == ["eltec_novels", "textbox_prose"] and config.instruct_sources
	assert resolve_config("tiny", ["a.jsonl"], [], vocab_size=100).instruct_sources == ()


def test_notebook_runs_on_the_tiny_preset(tmp_path: Path) -> None:
	from tests.nbrun import execute_notebook, outputs_text

	out = tmp_path / "data"
	notebook = execute_notebook(
		"create_data.ipynb",
		{"PRESET": "tiny", "OUT_DIR": str(out), "VOCAB_SIZE": 600, "TOKENIZER_CHARS": 200_000},
		cwd=ROOT,
	)
	text = outputs_text(notebook)
	assert (out / "data.json").exists() and (out / "vocab.txt").exists()
	summary = json.loads((out / "data.json").read_text())
	assert summary["vocab_size"] == 600
	assert "chars/token" in text and "embedded" in text
