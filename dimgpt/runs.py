"""The run directory: its layout, which checkpoint a path names, and what is recorded beside it.

Every other module asks this one where things are in a run, rather than knowing it:

	RUN_DIR/checkpoints/last/   the latest checkpoint: model.safetensors, recipe.json, training.pt
	RUN_DIR/checkpoints/best/   the same, at the best validation loss
	RUN_DIR/vocab.txt           the run's vocabulary (copied from its dataset)
	RUN_DIR/metrics.jsonl       one JSON record per log / validation; loss.png, accuracy.png
	RUN_DIR/finetune.json       a fine-tuning run: where it started from, validation loss before / after
	RUN_DIR/STOP                create it to stop the run gracefully (checkpoint, then exit)

A checkpoint records each config once: the run's recipe (`recipe.json`: a `Preset` holding the
model, data, train and fine-tuning configs); the weights file carries the model config in its header
too, so that it loads on its own. Weights saved alone (`save_model`) sit beside a `model.json`.

A dataset folder (made by `create-data`) holds `vocab.txt` and `data.json`, whose "config" is the
`DataConfig` that made it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dimgpt.config import DataConfig, InstructMix, Preset, from_dict, load_json
from dimgpt.errors import MismatchError, NotFoundError, UsageError

CHECKPOINTS, LAST, BEST = "checkpoints", "last", "best"
WEIGHTS_FILE = "model.safetensors"
MODEL_CONFIG_FILE = "model.json"  # beside weights saved alone; a checkpoint has recipe.json instead
RECIPE_FILE = "recipe.json"
TRAINING_STATE = "training.pt"
VOCAB_FILE = "vocab.txt"
METRICS_FILE = "metrics.jsonl"
FINETUNE_FILE = "finetune.json"
STOP_FILE = "STOP"
DATA_FILE = "data.json"
CHOICES = {"auto": (BEST, LAST), "best": (BEST,), "last": (LAST,)}


def last_checkpoint(run_dir: str | Path) -> Path:
	return Path(run_dir) / CHECKPOINTS / LAST


def best_checkpoint(run_dir: str | Path) -> Path:
	return Path(run_dir) / CHECKPOINTS / BEST


def checkpoint(path: str | Path, which: str = "auto") -> Path:
	"""The weights `path` names: a weights file, a checkpoint directory, a run directory's
	checkpoints/`which` ("auto": best when there is one, else last), or a folder holding one `.pt`
	(a released state dict)."""
	if which not in CHOICES:
		raise UsageError(f"checkpoint must be 'auto', 'best' or 'last', got {which!r}")
	path = Path(path)
	if path.is_file() or (path / WEIGHTS_FILE).is_file():
		return path
	if not path.exists():
		raise NotFoundError(
			f"no model at {path}: give a run directory, a checkpoint directory, a .safetensors file or a .pt "
			"state dict such as models/DimensionGPT-0.2B-Chat.pt"
		)
	for name in CHOICES[which]:
		if (path / CHECKPOINTS / name / WEIGHTS_FILE).is_file():
			return path / CHECKPOINTS / name
	pts = sorted(path.glob("*.pt"))
	if which == "auto" and len(pts) == 1:
		return pts[0]
	raise NotFoundError(
		f"{path}: no {WEIGHTS_FILE} here nor in {CHECKPOINTS}/{'|'.join(CHOICES[which])}/: give a run directory "
		"(e.g. runs/tiny/pretrain), a checkpoint directory or the weights file itself (.safetensors or .pt)"
	)


def holds_run(run_dir: str | Path) -> bool:
	"""Whether `run_dir` holds a run to resume (a save killed half-way left it in `.last.old`)."""
	last = last_checkpoint(run_dir)
	return any((d / TRAINING_STATE).is_file() for d in (last, last.parent / f".{LAST}.old"))


def saved_recipe(path: str | Path) -> Preset | None:
	"""The recipe saved with the checkpoint at `path` (a checkpoint directory or a file in one, or a
	run directory: its last checkpoint, else its best); None for weights saved without one."""
	path = Path(path)
	directory = path.parent if path.is_file() else path
	for candidate in (directory, last_checkpoint(directory), best_checkpoint(directory)):
		for where in (candidate, candidate.parent / f".{candidate.name}.old"):  # a save killed half-way
			if (where / RECIPE_FILE).is_file():
				return load_json(Preset, where / RECIPE_FILE)
	return None


def find_vocab(path: str | Path) -> Path | None:
	"""The `vocab.txt` of the model at `path`: next to it, in a parent run directory or its data/dataset
	directory, or in the dataset a fine-tuning run records in its finetune.json (None when none is found)."""
	path = Path(path).resolve()
	start = path if path.is_dir() else path.parent
	for directory in [start, *list(start.parents)[:3]]:
		candidates = [directory / VOCAB_FILE, directory / "data" / VOCAB_FILE, directory / "dataset" / VOCAB_FILE]
		dataset = read_finetune_info(directory).get("dataset")
		if isinstance(dataset, str):  # a fine-tuning run records the dataset it was trained on
			candidates.append(Path(dataset) / VOCAB_FILE)
		for candidate in candidates:
			if candidate.is_file():
				return candidate
	return None


def check_vocab(tokens: int, model_vocab_size: int, vocab: str | Path, model: str | Path) -> None:
	"""The one vocabulary-versus-model check: a model may have spare token slots, never fewer than the
	vocabulary has tokens."""
	if tokens > model_vocab_size:
		raise MismatchError(
			f"{vocab} has {tokens} tokens but the model has a vocabulary of {model_vocab_size}: use the "
			f"vocab.txt {model} was trained with (for a new run: a preset whose vocab_size fits it)"
		)


def dataset_config(dataset_dir: str | Path) -> DataConfig | None:
	"""The DataConfig a dataset folder was made with (its data.json), if it records one."""
	try:
		data = json.loads((Path(dataset_dir) / DATA_FILE).read_text(encoding="utf-8"))["config"]
		return from_dict(DataConfig, data)
	except (OSError, KeyError, ValueError, TypeError):
		return None


def dataset_mix(dataset_dir: str | Path, recipe: Preset) -> InstructMix:
	"""The conversation mix the dataset was made with (its data.json), else the recipe's."""
	data = dataset_config(dataset_dir)
	return data.instruct_mix if data is not None else recipe.data.instruct_mix


def read_finetune_info(run_dir: str | Path) -> dict[str, Any]:
	"""A fine-tuning run's finetune.json ({} when there is none or it is unreadable)."""
	try:
		info = json.loads((Path(run_dir) / FINETUNE_FILE).read_text(encoding="utf-8"))
	except (OSError, ValueError):
		return {}
	return info if isinstance(info, dict) else {}


def write_finetune_info(run_dir: str | Path, **fields: Any) -> None:
	"""Add `fields` to the run's finetune.json (created when absent)."""
	path = Path(run_dir) / FINETUNE_FILE
	path.parent.mkdir(parents=True, exist_ok=True)
	info = read_finetune_info(run_dir) | fields
	path.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
