"""Every command against a table of bad files and inputs.

Each case runs the real command line (`dimgpt.cli.main`) in a copy of a small world (a dataset made
by create-data, a run holding a checkpoint) spoiled in one way, and asserts what the README's
Troubleshooting table promises: one line on stderr naming the file or field, the documented exit
code, no traceback, no advice to load a file unsafely, and nothing changed on disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from support import small_config

from dimgpt.cli import main
from dimgpt.data.create import create_data
from dimgpt.data.store import block_checksums
from dimgpt.data.tokenizer import Tokenizer
from dimgpt.errors import ExitCode
from dimgpt.model.loading import save_model
from dimgpt.model.transformer import Transformer
from dimgpt.presets import get_preset
from dimgpt.training.lock import RunLock

ROOT = Path(__file__).resolve().parents[1]
UNSAFE_ADVICE = ("weights_only", "allow_pickle", "arbitrary code", "pickle.load")


class Evil:
	"""A pickle that would run a command if a loader ever unpickled it unsafely."""

	def __reduce__(self):
		return (os.system, ("touch PWNED",))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
	"""data/ (the tiny preset's dataset, small vocabulary) and run/ (a checkpoint and its vocab.txt)."""
	root = tmp_path_factory.mktemp("world")
	create_data(
		replace(get_preset("tiny").data, vocab_size=1_600, tokenizer_chars=200_000), root / "data", progress=False
	)
	vocab = Tokenizer.load(root / "data" / "vocab.txt").vocab_size
	config = small_config(vocab_size=vocab, context_length=64, window=32, n_heads=2, n_kv_heads=1)
	torch.manual_seed(0)
	save_model(Transformer(config), root / "run" / "checkpoints" / "best")
	shutil.copyfile(root / "data" / "vocab.txt", root / "run" / "vocab.txt")
	return root


def snapshot(directory: Path) -> dict[str, str]:
	"""Every file and folder under `directory`, with a hash of each file's bytes."""
	return {
		str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
		for p in sorted(directory.rglob("*"))
	}


# --- ways to spoil the world -----------------------------------------------------------------------

SHARD = "data/pretrain/embedded/train_00000"


def write(path: str, data: bytes | str) -> Callable[[Path], None]:
	def spoil(root: Path) -> None:
		(root / path).write_bytes(data.encode() if isinstance(data, str) else data)

	return spoil


def truncate(path: str, keep: float) -> Callable[[Path], None]:
	def spoil(root: Path) -> None:
		data = (root / path).read_bytes()
		(root / path).write_bytes(data[: int(len(data) * keep)])

	return spoil


def evil_pt(root: Path) -> None:
	torch.save({"model": Evil()}, root / "evil.pt")


def garbage_pt(root: Path) -> None:
	(root / "garbage.pt").write_bytes(b"these bytes are not a model " * 20)


def list_pt(root: Path) -> None:
	torch.save([1, 2, 3], root / "list.pt")


def ids_past_vocabulary(root: Path) -> None:
	# ids no tokenizer of this dataset made, under a matching checksum: a shard written wrong, not changed since
	tokens = np.memmap(root / f"{SHARD}.bin", dtype=np.uint16, mode="r+")
	tokens[:] = 60_000
	tokens.flush()
	manifest = json.loads((root / f"{SHARD}.json").read_text())
	manifest["checksum"]["bin"] = block_checksums(root / f"{SHARD}.bin")
	(root / f"{SHARD}.json").write_text(json.dumps(manifest))


def changed_tokens(root: Path) -> None:
	tokens = np.memmap(root / f"{SHARD}.bin", dtype=np.uint16, mode="r+")
	tokens[100:200] = 42  # valid ids: only the checksum can tell
	tokens.flush()


def ids_past_instruct_vocabulary(root: Path) -> None:
	for path in (root / "data/instruct").glob("*/*.bin"):
		if not path.name.endswith(".marks.bin"):
			tokens = np.memmap(path, dtype=np.uint16, mode="r+")
			tokens[:] = 60_000
			tokens.flush()


def pickled_offsets(root: Path) -> None:
	np.save(root / f"{SHARD}.idx.npy", np.array([Evil(), 1], dtype=object), allow_pickle=True)


def duplicate_last_vocab_line(root: Path) -> None:
	lines = (root / "run/vocab.txt").read_text(encoding="utf-8").split("\n")
	(root / "run/vocab.txt").write_text("\n".join([*lines, lines[-1]]), encoding="utf-8")


def _edit_model_json(root: Path, **changes: object) -> None:
	path = root / "run/checkpoints/best/model.json"
	config = json.loads(path.read_text())
	for key, value in changes.items():
		if value is None:
			del config[key]
		else:
			config[key] = value
	path.write_text(json.dumps(config))


def nothing(root: Path) -> None:
	pass


@dataclass(frozen=True)
class Case:
	name: str
	spoil: Callable[[Path], None]
	argv: tuple[str, ...]
	code: ExitCode
	names: tuple[str, ...]  # what the one line must contain: the file or field, the fix


GENERATE = ("generate", "Bonjour", "--max-new-tokens", "2", "--no-stream")
TRAIN = ("train", "--data", "data", "--run-dir", "new", "--max-steps", "1", "--no-progress")
CASES = [
	# 1. a non-model or malicious file given as weights
	Case("evil-generate", evil_pt, (*GENERATE, "--model", "evil.pt", "--vocab", "run/vocab.txt"), ExitCode.BAD_FILE, ("evil.pt", "not a DimensionGPT state dict")),
	Case("evil-chat", evil_pt, ("chat", "--model", "evil.pt", "--vocab", "run/vocab.txt"), ExitCode.BAD_FILE, ("evil.pt", "not a DimensionGPT state dict")),
	Case("evil-export", evil_pt, ("export-hf", "evil.pt", "out", "--vocab", "run/vocab.txt"), ExitCode.BAD_FILE, ("evil.pt", "not a DimensionGPT state dict")),
	Case("garbage-generate", garbage_pt, (*GENERATE, "--model", "garbage.pt", "--vocab", "run/vocab.txt"), ExitCode.BAD_FILE, ("garbage.pt", "not a DimensionGPT state dict")),
	Case("list-generate", list_pt, (*GENERATE, "--model", "list.pt", "--vocab", "run/vocab.txt"), ExitCode.BAD_FILE, ("list.pt", "not a DimensionGPT state dict")),
	Case("truncated-safetensors", truncate("run/checkpoints/best/model.safetensors", 0.5), (*GENERATE, "--model", "run"), ExitCode.BAD_FILE, ("model.safetensors", "truncated or corrupt")),
	Case("mistyped-run", nothing, (*GENERATE, "--model", "rnu"), ExitCode.NOT_FOUND, ("no such file or folder: rnu", "check the path")),
	Case("missing-released", nothing, (*GENERATE, "--model", "models/DimensionGPT-0.2B-Chat.pt"), ExitCode.NOT_FOUND, ("DimensionGPT-0.2B-Chat.pt", "models/README.md")),
	# 4. vocabularies
	Case("vocab-not-utf8", write("run/vocab.txt", b"\xff\xfe\x00abc"), (*GENERATE, "--model", "run"), ExitCode.BAD_FILE, ("vocab.txt", "invalid UTF-8")),
	Case("vocab-duplicate", duplicate_last_vocab_line, (*GENERATE, "--model", "run"), ExitCode.BAD_FILE, ("vocab.txt", "appears twice")),
	Case("vocab-empty", write("run/vocab.txt", ""), (*GENERATE, "--model", "run"), ExitCode.BAD_FILE, ("vocab.txt is empty",)),
	Case("vocab-missing", nothing, (*GENERATE, "--model", "run", "--vocab", "nope/vocab.txt"), ExitCode.NOT_FOUND, ("nope/vocab.txt",)),
	Case("export-vocab-not-utf8", write("run/vocab.txt", b"\xff\xfe"), ("export-hf", "run", "out"), ExitCode.BAD_FILE, ("vocab.txt", "invalid UTF-8")),
	# 17. create-data with a source that does not exist: at once, nothing written
	Case("create-data-missing-source", nothing, ("create-data", "--sources", "nonexistent.txt", "--out", "new", "--no-progress"), ExitCode.NOT_FOUND, ("nonexistent.txt", "no file matches")),
	Case("create-data-bad-multiplier", nothing, ("create-data", "--sources", "a.txt@lots", "--out", "new", "--no-progress"), ExitCode.USAGE, ("multiplier 'lots'",)),
	Case("create-data-unknown-preset", nothing, ("create-data", "--preset", "huge", "--out", "new", "--no-progress"), ExitCode.USAGE, ("invalid choice: 'huge'", "create-data --help")),
	Case("train-bad-value", nothing, ("train", "--data", "data", "--run-dir", "new", "--set", "lr=fast"), ExitCode.USAGE, ("--set lr=fast", "TrainConfig.lr must be a number")),
	Case("generate-bad-number", nothing, ("generate", "--model", "run", "--top-k", "many"), ExitCode.USAGE, ("--top-k", "invalid int value")),
	Case("model-json-dim-not-a-number", lambda root: _edit_model_json(root, dim="abc"), (*GENERATE, "--model", "run"), ExitCode.BAD_FILE, ("model.json", "ModelConfig.dim must be an integer, got 'abc'")),
	Case("model-json-dim-missing", lambda root: _edit_model_json(root, dim=None), (*GENERATE, "--model", "run"), ExitCode.BAD_FILE, ("model.json", "dim missing")),
	# 2-4. damaged datasets: train refuses them before the run directory is made
	Case("train-truncated-shard", truncate(f"{SHARD}.bin", 0.5), TRAIN, ExitCode.BAD_FILE, ("train_00000.bin", "truncated", "create-data")),
	Case("train-manifest-cut", write(f"{SHARD}.json", '{"tokens":'), TRAIN, ExitCode.BAD_FILE, ("train_00000.json is corrupt",)),
	Case("train-manifest-no-dtype", write(f"{SHARD}.json", "{}"), TRAIN, ExitCode.BAD_FILE, ("train_00000.json", "KeyError('dtype')")),
	Case("train-data-json-not-an-object", write("data/data.json", "[]"), TRAIN, ExitCode.BAD_FILE, ("data.json is corrupt (not a JSON object)",)),
	Case("train-ids-past-vocabulary", ids_past_vocabulary, TRAIN, ExitCode.BAD_FILE, ("train_00000.bin: token id 60000", "outside the vocabulary")),
	Case("train-shard-changed", changed_tokens, TRAIN, ExitCode.BAD_FILE, ("train_00000.bin does not match its checksum",)),
	Case("train-offsets-garbage", write(f"{SHARD}.idx.npy", b"\x93NUMPY garbage" * 9), TRAIN, ExitCode.BAD_FILE, ("train_00000.idx.npy is not a valid offsets file",)),
	Case("train-offsets-pickled", pickled_offsets, TRAIN, ExitCode.BAD_FILE, ("train_00000.idx.npy is not a valid offsets file",)),
	Case("train-vocab-not-utf8", write("data/vocab.txt", b"\xff\xfe"), TRAIN, ExitCode.BAD_FILE, ("data/vocab.txt", "invalid UTF-8")),
	Case("train-vocab-duplicate", lambda root: (duplicate_last_vocab_line(root), shutil.copyfile(root / "run/vocab.txt", root / "data/vocab.txt")), TRAIN, ExitCode.BAD_FILE, ("data/vocab.txt", "appears twice")),
	Case("train-no-dataset", nothing, ("train", "--data", "nodata", "--run-dir", "new", "--no-progress"), ExitCode.NOT_FOUND, ("nodata/data.json not found", "create-data")),
	Case("train-evil-init-from", evil_pt, (*TRAIN, "--init-from", "evil.pt"), ExitCode.BAD_FILE, ("evil.pt", "not a DimensionGPT state dict")),
	Case("finetune-ids-past-vocabulary", ids_past_instruct_vocabulary, ("finetune", "--from", "run", "--data", "data", "--run-dir", "new", "--preset", "tiny", "--max-steps", "1", "--no-progress"), ExitCode.BAD_FILE, (".bin: token id 60000", "outside the vocabulary")),
	Case("train-unknown-field", nothing, ("train", "--data", "data", "--run-dir", "new", "--set", "colour=3"), ExitCode.USAGE, ("--set colour=3", "no field 'colour'")),
]  # fmt: skip


def troubleshooting() -> list[tuple[list[str], set[int]]]:
	"""(message excerpts, exit codes) of each row of the README's Troubleshooting table."""
	text = (ROOT / "README.md").read_text(encoding="utf-8").split("## Troubleshooting", 1)[1].split("\n## ", 1)[0]
	rows = []
	for line in text.splitlines():
		cells = [c.strip() for c in line.strip("|").split("|")]
		if line.startswith("| `") and len(cells) == 3:
			rows.append((re.findall(r"`([^`]+)`", cells[0]), {int(c) for c in re.findall(r"\d+", cells[1])}))
	return rows


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_gives_one_line_and_changes_nothing(
	case: Case, world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
	shutil.copytree(world, tmp_path, dirs_exist_ok=True)
	case.spoil(tmp_path)
	before = snapshot(tmp_path)
	monkeypatch.chdir(tmp_path)
	monkeypatch.setattr("builtins.input", lambda prompt="": "/quit")
	monkeypatch.delenv("DIMGPT_DEBUG", raising=False)
	try:
		code = main(list(case.argv))
	except SystemExit as exit:  # argparse's own refusals (an unknown choice, a missing option)
		code = exit.code
	err = capsys.readouterr().err
	lines = err.strip().splitlines()
	assert code == case.code, err
	assert len(lines) == 1 and lines[0].startswith("error: "), err
	for text in case.names:
		assert text in lines[0]
	assert not any(advice in err for advice in UNSAFE_ADVICE)
	# the README's Troubleshooting table has a row for this line, with this exit code
	assert any(code in codes and any(e in lines[0] for e in excerpts) for excerpts, codes in troubleshooting())
	assert snapshot(tmp_path) == before
	assert not (tmp_path / "PWNED").exists()


def test_a_run_directory_in_use_is_refused(world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
	with RunLock(tmp_path / "run"):  # held as another process would hold it (a second open file)
		before = snapshot(tmp_path)
		argv = ["train", "--data", str(world / "data"), "--run-dir", str(tmp_path / "run"), "--max-steps", "1"]
		assert main([*argv, "--no-progress"]) == ExitCode.BUSY
		assert snapshot(tmp_path) == before
	assert (
		capsys.readouterr().err
		== f"error: run {tmp_path / 'run'} is in use by process {os.getpid()}: wait for it to finish, stop it (a STOP file in {tmp_path / 'run'} saves and stops it), or use another run directory\n"
	)


@pytest.mark.slow  # starts python -m dimgpt
def test_the_real_entry_point_prints_one_line_and_debug_shows_the_traceback(world: Path, tmp_path: Path) -> None:
	evil_pt(tmp_path)
	argv = [sys.executable, "-m", "dimgpt", *GENERATE, "--model", "evil.pt", "--vocab", str(world / "run/vocab.txt")]
	env = {**os.environ, "PYTHONPATH": str(ROOT)}
	env.pop("DIMGPT_DEBUG", None)
	result = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
	assert result.returncode == ExitCode.BAD_FILE
	assert result.stderr.strip().splitlines() == [
		"error: evil.pt: not a DimensionGPT state dict or checkpoint; give a .safetensors file, a run or "
		"checkpoint directory, or the released DimensionGPT-0.2B(-Chat).pt"
	]
	debug = subprocess.run(
		argv, cwd=tmp_path, capture_output=True, text=True, timeout=300, env={**env, "DIMGPT_DEBUG": "1"}
	)
	assert debug.returncode == ExitCode.BUG and "Traceback" in debug.stderr and "BadFileError" in debug.stderr
	assert not (tmp_path / "PWNED").exists()
