"""Checkpoints: model weights, optimizer and loader positions, written atomically.

A checkpoint is a directory (`RUN_DIR/checkpoints/last`, `.../best`; the layout is `dimgpt.runs`'s)
holding `model.safetensors` (its header holds the model config, so `load_model(directory)` works on
it alone), `training.pt` (optimizer, gradient scaler, counters, loader states, RNG states; plain
tensors and containers, read back with `weights_only=True`) and `recipe.json`, the run's recipe (a
`Preset`: the configs a run continued or started from this checkpoint takes by default). Each
config is written there once.

Atomicity: the new checkpoint is written in full to `.NAME.tmp`, every file fsynced, then the old
directory is renamed to `.NAME.old`, the new one to `NAME`, and the old one removed. A kill at any
instant leaves either `NAME` or `.NAME.old` complete; `recover` puts the survivor back in place.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dimgpt import runs
from dimgpt.config import ModelConfig, Preset, from_dict, save_json
from dimgpt.errors import BadFileError, DiskError, MismatchError, NotFoundError, disk_error
from dimgpt.model.loading import save_weights

TRAINING_STATE, RECIPE_FILE = runs.TRAINING_STATE, runs.RECIPE_FILE


def _fsync_path(path: Path) -> None:
	fd = os.open(path, os.O_RDONLY)
	try:
		os.fsync(fd)
	finally:
		os.close(fd)


def _fsync_tree(directory: Path) -> None:
	for path in directory.iterdir():
		if path.is_file():
			_fsync_path(path)
	_fsync_path(directory)


def _siblings(directory: Path) -> tuple[Path, Path]:
	return directory.parent / f".{directory.name}.tmp", directory.parent / f".{directory.name}.old"


def recover(directory: str | Path) -> Path:
	"""Finish or undo a save that was killed half-way, so `directory` is the last complete checkpoint."""
	directory = Path(directory)
	tmp, old = _siblings(directory)
	if not directory.exists() and old.exists():
		os.replace(old, directory)
	shutil.rmtree(old, ignore_errors=True)
	shutil.rmtree(tmp, ignore_errors=True)
	return directory


def save_checkpoint(
	directory: str | Path, model: nn.Module, state: dict[str, Any], recipe: Preset | None = None
) -> Path:
	"""Write `model`, the training `state` and the run's `recipe` (when known) to `directory`."""
	directory = Path(directory)
	directory.parent.mkdir(parents=True, exist_ok=True)
	tmp, old = _siblings(directory)
	shutil.rmtree(tmp, ignore_errors=True)
	try:
		tmp.mkdir()
		save_weights(model, tmp / runs.WEIGHTS_FILE)
		# Through a Python file, so that a full disk is an OSError with its errno (torch.save on a path
		# reports only an "enforce fail" RuntimeError).
		with open(tmp / TRAINING_STATE, "wb") as f:
			torch.save(state, f)
		if recipe is not None:
			save_json(recipe, tmp / RECIPE_FILE)
		_fsync_tree(tmp)
	except (OSError, RuntimeError) as error:
		shutil.rmtree(tmp, ignore_errors=True)  # never leave a partial copy filling the disk
		cause = _os_error(error)
		known = cause and disk_error(cause, directory.parent, f"saving the checkpoint {directory.name}")
		if known is None:
			raise
		raise DiskError(f"{known} (the previous checkpoint is intact)") from None
	if directory.exists():
		shutil.rmtree(old, ignore_errors=True)
		os.replace(directory, old)
	os.replace(tmp, directory)
	_fsync_path(directory.parent)
	shutil.rmtree(old, ignore_errors=True)
	return directory


def _os_error(error: BaseException | None) -> OSError | None:
	"""The OSError behind `error` (torch.save reraises a failed write as a RuntimeError)."""
	while error is not None and not isinstance(error, OSError):
		error = error.__cause__ or error.__context__
	return error


def has_checkpoint(directory: str | Path) -> bool:
	"""Whether `directory` (after `recover`) holds a resumable checkpoint."""
	return (recover(directory) / TRAINING_STATE).is_file()


def load_training_state(directory: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
	"""The `training.pt` of a checkpoint, read without pickle."""
	path = recover(directory) / TRAINING_STATE
	if not path.is_file():
		raise NotFoundError(
			f"no training state at {path}: {directory} is not a resumable checkpoint "
			"(to start a new run from its weights, pass it as init_from)"
		)
	try:
		return torch.load(path, map_location=map_location, weights_only=True)
	except Exception as error:
		raise BadFileError(
			f"{path}: unreadable training state ({error}); delete the checkpoint to start over"
		) from None


def check_model_config(saved: ModelConfig | dict[str, Any], wanted: ModelConfig, where: str | Path) -> None:
	"""Refuse a checkpoint whose model shape differs from the requested one, naming the fields."""
	if isinstance(saved, dict):
		saved = from_dict(ModelConfig, saved)
	differences = [
		f"{f.name}: checkpoint {getattr(saved, f.name)!r}, requested {getattr(wanted, f.name)!r}"
		for f in dataclasses.fields(ModelConfig)
		if getattr(saved, f.name) != getattr(wanted, f.name)
	]
	if differences:
		raise MismatchError(
			f"{where} was made with a different model config ({'; '.join(differences)}); "
			"use the preset it was trained with, or another run directory"
		)
