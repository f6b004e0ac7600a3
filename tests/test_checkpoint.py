"""Checkpoints: round trip without pickle, atomic replacement under SIGKILL, config-mismatch refusal."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from support import QUICK, ROOT, SMALL, ListLoader, real_batches

from dimgpt.model.loading import load_model
from dimgpt.model.transformer import Transformer
from dimgpt.presets import get_preset
from dimgpt.runs import saved_recipe
from dimgpt.training.checkpoint import (
	check_model_config,
	has_checkpoint,
	load_training_state,
	recover,
	save_checkpoint,
)
from dimgpt.training.trainer import Trainer


def test_round_trip_is_plain_data(tmp_path: Path) -> None:
	torch.manual_seed(0)
	model = Transformer(SMALL)
	state = {"step": 7, "rng": random.getstate(), "loaders": [{"step": 3}], "best": None, "t": torch.arange(3)}
	recipe = replace(get_preset("tiny"), model=SMALL, train=QUICK)
	directory = save_checkpoint(tmp_path / "last", model, state, recipe)
	assert sorted(p.name for p in directory.iterdir()) == [
		"model.safetensors",
		"recipe.json",
		"training.pt",
	]
	assert saved_recipe(directory) == recipe  # every config once, the model's in the recipe
	loaded = load_training_state(directory)  # weights_only=True inside
	assert loaded["step"] == 7 and loaded["loaders"] == [{"step": 3}] and loaded["best"] is None
	assert tuple(loaded["rng"][1]) == random.getstate()[1]
	again = load_model(directory)
	for (name, a), b in zip(model.state_dict().items(), again.state_dict().values()):
		assert torch.equal(a, b), name
	assert again.final_linear.weight is again.token_embedding.weight
	assert [p.name for p in tmp_path.iterdir()] == ["last"]  # no temporary left behind


def test_recover_from_each_crash_point(tmp_path: Path) -> None:
	model = Transformer(SMALL)
	last = tmp_path / "last"
	save_checkpoint(last, model, {"step": 1})
	# Killed after the old checkpoint was moved aside, before the new one took its place.
	os.replace(last, tmp_path / ".last.old")
	(tmp_path / ".last.tmp").mkdir()
	(tmp_path / ".last.tmp" / "model.safetensors").write_bytes(b"half")
	assert has_checkpoint(last) and load_training_state(last)["step"] == 1
	assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]
	# Killed while writing the new one: the temporary is dropped, the old one stays.
	(tmp_path / ".last.tmp").mkdir()
	assert load_training_state(recover(last))["step"] == 1
	with pytest.raises(FileNotFoundError, match="not a resumable checkpoint"):
		load_training_state(tmp_path / "nothing")


SAVER = textwrap.dedent(
	"""
	import sys, torch
	from dimgpt.model.transformer import Transformer
	from dimgpt.training.checkpoint import save_checkpoint
	from support import SMALL
	model = Transformer(SMALL)
	step = 0
	while True:
		step += 1
		with torch.no_grad():
			for p in model.parameters():
				p.fill_(step)
		save_checkpoint(sys.argv[1], model, {"step": step, "moments": torch.full((50_000,), float(step))})
		print(step, flush=True)
	"""
)


@pytest.mark.slow  # kills a saving process many times
def test_a_kill_at_any_instant_leaves_a_loadable_checkpoint(tmp_path: Path) -> None:
	rng = random.Random(0)
	env = os.environ | {"PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]), "OMP_NUM_THREADS": "1"}
	for trial in range(4):
		directory = tmp_path / f"trial{trial}" / "last"
		process = subprocess.Popen(
			[sys.executable, "-c", SAVER, str(directory)], stdout=subprocess.PIPE, text=True, env=env
		)
		saved = [int(process.stdout.readline())]  # at least one checkpoint is complete
		time.sleep(rng.uniform(0.0, 0.5))  # then kill it somewhere inside a later save
		process.send_signal(signal.SIGKILL)
		saved += [int(line) for line in process.stdout.read().split()]
		process.wait()
		state = load_training_state(directory)
		assert state["step"] in (saved[-1], saved[-1] + 1)  # the last completed save, or one finished unreported
		model = load_model(directory)
		assert all(torch.all(p == state["step"]) for p in model.parameters())
		assert torch.all(state["moments"] == state["step"])


def test_resume_refuses_another_model_config(tiny_dataset: Path, tmp_path: Path) -> None:
	data = tiny_dataset
	loader = ListLoader(real_batches(data, 1, 4))
	Trainer(SMALL, replace(QUICK, max_steps=1), tmp_path, loader, progress=False).fit()
	other = replace(SMALL, n_layers=3, dim=128)
	with pytest.raises(
		ValueError,
		match=r"different model config \(dim: checkpoint 64, requested 128; n_layers: checkpoint 2, requested 3\)",
	):
		Trainer(other, QUICK, tmp_path, loader, progress=False)
	check_model_config(SMALL, SMALL, "same")  # no complaint
	with pytest.raises(ValueError, match="window"):
		check_model_config(SMALL, replace(SMALL, window=8), get_preset("tiny").name)
