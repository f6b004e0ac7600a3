"""The run directory: which checkpoint a path names, the vocabulary and recipe found for it, the one vocabulary check."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from dimgpt import runs
from dimgpt.config import save_json
from dimgpt.errors import MismatchError, NotFoundError, UsageError
from dimgpt.presets import get_preset


def touch(path: Path) -> Path:
	path.parent.mkdir(parents=True, exist_ok=True)
	path.touch()
	return path


def test_checkpoint_a_path_names(tmp_path: Path) -> None:
	run = tmp_path / "runs" / "tiny"
	for name in ("best", "last"):
		touch(run / "checkpoints" / name / "model.safetensors")
	assert runs.checkpoint(run) == run / "checkpoints" / "best"
	assert runs.checkpoint(run, "last") == run / "checkpoints" / "last"
	assert runs.checkpoint(run / "checkpoints" / "last") == run / "checkpoints" / "last"
	weights = touch(tmp_path / "models" / "DimensionGPT-0.2B-Chat.pt")
	assert runs.checkpoint(weights) == runs.checkpoint(weights.parent) == weights  # a folder with one .pt
	only_last = tmp_path / "only-last"
	touch(only_last / "checkpoints" / "last" / "model.safetensors")
	assert runs.checkpoint(only_last) == only_last / "checkpoints" / "last"
	with pytest.raises(NotFoundError, match=r"checkpoints/best/"):
		runs.checkpoint(only_last, "best")
	with pytest.raises(NotFoundError, match="no model at"):
		runs.checkpoint(tmp_path / "nothing")
	with pytest.raises(UsageError, match="'auto', 'best' or 'last'"):
		runs.checkpoint(run, "first")


def test_find_vocab(tmp_path: Path) -> None:
	run = tmp_path / "runs" / "tiny"
	touch(run / "checkpoints" / "best" / "model.safetensors")
	assert runs.find_vocab(runs.checkpoint(run)) is None
	touch(run / "data" / "vocab.txt")  # the dataset inside the run directory
	assert runs.find_vocab(runs.checkpoint(run)) == (run / "data" / "vocab.txt").resolve()
	touch(run / "vocab.txt")  # the run's own copy comes first
	assert runs.find_vocab(runs.checkpoint(run)) == (run / "vocab.txt").resolve()

	chat = tmp_path / "elsewhere" / "chat"  # a fine-tuning run names its dataset in finetune.json
	touch(chat / "checkpoints" / "last" / "model.safetensors")
	runs.write_finetune_info(chat, dataset=str(run / "data"))
	assert runs.find_vocab(runs.checkpoint(chat)) == run / "data" / "vocab.txt"
	runs.write_finetune_info(chat, step=3)  # added to what is there
	assert runs.read_finetune_info(chat) == {"dataset": str(run / "data"), "step": 3}


def test_saved_recipe_and_resumable_run(tmp_path: Path) -> None:
	run = tmp_path / "run"
	assert runs.saved_recipe(run) is None and not runs.holds_run(run)
	recipe = replace(get_preset("tiny"), name="mine")
	last = runs.last_checkpoint(run)
	last.mkdir(parents=True)
	save_json(recipe, last / "recipe.json")
	touch(last / "training.pt")
	assert runs.saved_recipe(run) == runs.saved_recipe(last) == runs.saved_recipe(touch(last / "model.safetensors"))
	assert runs.saved_recipe(run) == recipe and runs.holds_run(run)
	last.rename(last.parent / ".last.old")  # a save killed half-way: the old checkpoint is still the run's
	assert runs.saved_recipe(run) == recipe and runs.holds_run(run)


def test_one_vocabulary_check_and_dataset_config(tmp_path: Path) -> None:
	runs.check_vocab(100, 128, "vocab.txt", "the model")  # spare token slots are fine
	with pytest.raises(MismatchError, match=r"vocab\.txt has 129 tokens but the model has a vocabulary of 128"):
		runs.check_vocab(129, 128, "vocab.txt", "the model")
	tiny = get_preset("tiny")
	assert runs.dataset_config(tmp_path) is None and runs.dataset_mix(tmp_path, tiny) == tiny.data.instruct_mix
	(tmp_path / "data.json").write_text(json.dumps({"config": {"vocab_size": 600}}))
	assert runs.dataset_config(tmp_path).vocab_size == 600
