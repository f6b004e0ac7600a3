"""DistributedDataParallel: two CPU processes (gloo, launched by torchrun through the CLI) train like
one process over the same global batch, and resume the same way."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dimgpt.data.loader import PretrainLoader
from dimgpt.training.build import train
from dimgpt.training.metrics import read_metrics

pytestmark = pytest.mark.slow  # two torchrun processes

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {"batch_size": 2, "grad_accum": 2, "log_every": 1, "eval_every": 2, "checkpoint_every": 2}


class Interleaved:
	"""One process standing in for two ranks: micro-batch i comes from rank i % 2's loader."""

	def __init__(self, loaders: list[PretrainLoader]) -> None:
		self.loaders, self.count = loaders, 0

	def next_batch(self):
		batch = self.loaders[self.count % len(self.loaders)].next_batch()
		self.count += 1
		return batch

	def state_dict(self) -> dict:
		return {"count": self.count, "loaders": [loader.state_dict() for loader in self.loaders]}

	def load_state_dict(self, state: dict) -> None:
		self.count = state["count"]
		for loader, s in zip(self.loaders, state["loaders"]):
			loader.load_state_dict(s)

	def close(self) -> None:
		for loader in self.loaders:
			loader.close()


def torchrun(data: Path, run_dir: Path, steps: int) -> subprocess.CompletedProcess:
	settings = {**SETTINGS, "eval_batches": 2}
	args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
	args += ["-m", "dimgpt", "train", "--preset", "tiny", "--data", str(data), "--run-dir", str(run_dir)]
	args += ["--max-steps", str(steps), "--no-progress"]
	args += [arg for k, v in settings.items() for arg in ("--set", f"{k}={v}")]
	env = os.environ | {"OMP_NUM_THREADS": "1"}
	return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)


@pytest.mark.usefixtures("one_thread")
def test_two_gloo_processes_match_one_process(tiny_dataset: Path, tmp_path: Path) -> None:
	data = tiny_dataset

	def make_loader(split: str, env) -> Interleaved:
		return Interleaved([PretrainLoader(data, split, 2, 128, rank=r, world_size=2) for r in (0, 1)])

	# Each rank keeps 2 validation batches; the single process keeps the same 4.
	single = train(
		"tiny", data, tmp_path / "one", make_loader=make_loader, progress=False, max_steps=6, eval_batches=4, **SETTINGS
	)
	assert single.step == 6

	ddp = tmp_path / "ddp"
	result = torchrun(data, ddp, 4)
	assert result.returncode == 0, result.stdout + result.stderr
	assert "2 process(es)" in result.stdout
	state = torch.load(ddp / "checkpoints" / "last" / "training.pt", weights_only=True)
	assert state["world_size"] == 2 and [s["rank"] for s in state["loaders"]] == [0, 1]
	result = torchrun(data, ddp, 6)  # resume under torchrun
	assert result.returncode == 0, result.stdout + result.stderr
	assert "from step 4" in result.stdout

	one, two = read_metrics(tmp_path / "one" / "metrics.jsonl"), read_metrics(ddp / "metrics.jsonl")
	assert [r["step"] for r in two] == [r["step"] for r in one]  # rank 0 alone logs: no duplicate lines
	for a, b in zip(one, two):
		for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
			if key in a:
				assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), (a["step"], key)
		assert a.get("tokens") == b.get("tokens")
	steps = [r["loss"] for r in one if "loss" in r]
	assert len(set(steps)) == len(steps)  # the losses move: equal sequences are not a coincidence
