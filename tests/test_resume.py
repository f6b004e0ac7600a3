"""Exact resume: a CLI run killed at a random step (SIGKILL) or stopped (SIGTERM) and restarted
reproduces the uninterrupted run's losses bit for bit."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dimgpt.training.metrics import read_metrics

pytestmark = pytest.mark.slow  # training runs in subprocesses, killed and resumed

ROOT = Path(__file__).resolve().parents[1]
STEPS = 24
# One thread: fast on a busy 2-core machine, and the same arithmetic in every run.
ENV = os.environ | {"OMP_NUM_THREADS": "1"}


def command(data: Path, run_dir: Path) -> list[str]:
	settings = ["batch_size=2", "log_every=1", "eval_every=8", "eval_batches=2", "checkpoint_every=3"]
	return [
		sys.executable,
		"-m",
		"dimgpt",
		"train",
		"--preset",
		"tiny",
		"--data",
		str(data),
		"--run-dir",
		str(run_dir),
		"--max-steps",
		str(STEPS),
		"--no-progress",
		*(arg for s in settings for arg in ("--set", s)),
	]


def run(data: Path, run_dir: Path) -> subprocess.CompletedProcess:
	return subprocess.run(command(data, run_dir), cwd=ROOT, capture_output=True, text=True, timeout=600, env=ENV)


def curve(run_dir: Path) -> list[tuple]:
	"""Every logged loss and validation loss, in order, keyed by step."""
	records = read_metrics(run_dir / "metrics.jsonl")
	return [(r["step"], r.get("loss"), r.get("accuracy"), r.get("val_loss")) for r in records]


@pytest.fixture(scope="module")
def data(tiny_dataset: Path) -> Path:
	return tiny_dataset


@pytest.fixture(scope="module")
def reference(data: Path, tmp_path_factory: pytest.TempPathFactory) -> list[tuple]:
	run_dir = tmp_path_factory.mktemp("reference")
	result = run(data, run_dir)
	assert result.returncode == 0, result.stderr
	points = curve(run_dir)
	assert [p[0] for p in points if p[1] is not None] == list(range(1, STEPS + 1))
	return points


def interrupt(data: Path, run_dir: Path, signum: int, at_step: int) -> int:
	"""Start the run, send `signum` once it has logged `at_step`, return its exit code."""
	process = subprocess.Popen(
		command(data, run_dir), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV
	)
	try:
		while not any(r.get("step", 0) >= at_step for r in read_metrics(run_dir / "metrics.jsonl")):
			assert process.poll() is None, "the run ended before it could be interrupted"
			time.sleep(0.02)
		process.send_signal(signum)
		return process.wait(timeout=120)
	finally:
		if process.poll() is None:
			process.kill()
			process.wait()


@pytest.mark.parametrize("seed", [1, 2])
def test_sigkill_at_a_random_step_then_resume_is_exact(data: Path, reference: list, tmp_path: Path, seed: int) -> None:
	at_step = random.Random(seed).randint(2, STEPS - 4)
	assert interrupt(data, tmp_path, signal.SIGKILL, at_step) == -signal.SIGKILL
	state = tmp_path / "checkpoints" / "last" / "training.pt"
	saved = torch.load(state, weights_only=True)["step"] if state.exists() else 0  # killed before the first one
	assert saved < STEPS
	result = run(data, tmp_path)
	assert result.returncode == 0, result.stderr
	assert f"from step {saved}" in result.stdout
	assert curve(tmp_path) == reference  # same floats, bit for bit; lines past the checkpoint were dropped


def test_sigterm_saves_then_resume_is_exact(data: Path, reference: list, tmp_path: Path) -> None:
	assert interrupt(data, tmp_path, signal.SIGTERM, 5) == 143
	saved = torch.load(tmp_path / "checkpoints" / "last" / "training.pt", weights_only=True)["step"]
	logged = max(r["step"] for r in read_metrics(tmp_path / "metrics.jsonl"))
	assert saved == logged < STEPS  # it saved at the step where it stopped, not at the last periodic checkpoint
	result = run(data, tmp_path)
	assert result.returncode == 0, result.stderr
	assert curve(tmp_path) == reference


def test_resume_with_another_preset_is_refused(data: Path, tmp_path: Path) -> None:
	args = command(data, tmp_path)
	args[args.index("--max-steps") + 1] = "1"
	assert subprocess.run(args, cwd=ROOT, capture_output=True, timeout=600, env=ENV).returncode == 0
	args[args.index("tiny")] = "dimensiongpt-0.2b"
	result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600, env=ENV)
	assert result.returncode != 0
	assert "different model config" in result.stderr and "n_layers: checkpoint 4, requested 16" in result.stderr
