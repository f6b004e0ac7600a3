"""Fine-tuning: from a pretrained run's checkpoint to a chat model.

The same trainer as pretraining, with the `finetune` recipe of the pretrained run (its saved
recipe; a preset given overrides it), the instruction store of the dataset and the conversation mix
of `dimgpt.data.mix`. The pretrained run is only read: the new run
lives in its own directory (checkpoints, metrics, plots, vocab.txt) and resumes from there when
restarted.

	RUN_DIR/finetune.json   where it started from; validation loss (answer tokens) before and after
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from dimgpt.config import InstructMix, Preset, TrainConfig
from dimgpt.data.mix import mix_loaders
from dimgpt.model.loading import load_model, read_model_config
from dimgpt.training.distributed import cleanup_distributed
from dimgpt.training.trainer import Trainer, TrainResult, build_trainer, dataset_mix, resolve_recipe

INFO_FILE = "finetune.json"


def pretrained_checkpoint(path: str | Path, which: str = "auto") -> Path:
	"""The checkpoint directory to start from: RUN_DIR/checkpoints/{best,last}, or a checkpoint directory.

	which: "best", "last", or "auto" (best when the run has one, else last).
	"""
	path = Path(path)
	if (path / "model.safetensors").is_file():
		return path
	checkpoints = path / "checkpoints"
	order = {"auto": ("best", "last"), "best": ("best",), "last": ("last",)}
	if which not in order:
		raise ValueError(f"checkpoint must be 'auto', 'best' or 'last', got {which!r}")
	for name in order[which]:
		if (checkpoints / name / "model.safetensors").is_file():
			return checkpoints / name
	raise FileNotFoundError(
		f"no pretrained checkpoint in {path}: expected {checkpoints}/{'|'.join(order[which])}/model.safetensors "
		"(pass the run directory of a pretraining run, e.g. runs/tiny, or a checkpoint directory)"
	)


def _is_main() -> bool:
	return int(os.environ.get("RANK", "0")) == 0  # under torchrun, only rank 0 writes finetune.json


def _check_separate(source: Path, run_dir: Path) -> None:
	"""Refuse a fine-tuning run directory that is, holds or lies inside the pretrained run."""
	source, run_dir = source.resolve(), run_dir.resolve()
	pretrain_run = source.parent.parent if source.parent.name == "checkpoints" else source
	for a, b in ((run_dir, pretrain_run), (pretrain_run, run_dir)):
		if a == b or b in a.parents:
			raise ValueError(
				f"the fine-tuning run directory {run_dir} overlaps the pretrained run {pretrain_run}; "
				"give the fine-tuning its own --run-dir (the pretrained run is never written to)"
			)


@torch.no_grad()
def validation_loss(model: torch.nn.Module, batches: list[tuple[torch.Tensor, ...]]) -> float:
	"""Weighted mean cross-entropy of `model` over (x, y, w) batches (answer tokens only in validation)."""
	model.eval()
	device = next(model.parameters()).device
	loss_sum, weight = 0.0, 0.0
	for x, y, w in batches:
		x, y, w = x.to(device), y.to(device), w.to(device)
		losses = F.cross_entropy(model(x).float().flatten(0, 1), y.flatten(), reduction="none")
		loss_sum += (losses * w.flatten()).sum().item()
		weight += w.sum().item()
	return loss_sum / weight if weight > 0 else math.nan


def build_finetuner(
	from_run: str | Path,
	dataset_dir: str | Path,
	run_dir: str | Path,
	*,
	preset: Preset | str | None = None,
	mix: InstructMix | None = None,
	checkpoint: str = "auto",
	train_config: TrainConfig | None = None,
	progress: bool = True,
	**overrides: Any,
) -> Trainer:
	"""A Trainer that fine-tunes the pretrained run `from_run` on the instructions of `dataset_dir`.

	The model shape comes from the checkpoint; the train config is the `finetune` recipe saved with
	it (resuming: the run's own), or `preset.finetune` when a preset is given, or `train_config`, with
	`overrides` replacing its fields (`max_steps=100`, ...). `mix` defaults to the dataset's
	`instruct_mix`, else the recipe's. Validation takes at most the batches that cover the held-out
	conversations once. If `run_dir` holds a run, the Trainer resumes it; otherwise the validation
	loss of the starting weights goes to RUN_DIR/finetune.json first.
	"""
	source = pretrained_checkpoint(from_run, checkpoint)
	dataset_dir, run_dir = Path(dataset_dir), Path(run_dir)
	_check_separate(source, run_dir)
	recipe, config = resolve_recipe(preset, run_dir, "instruct", source)
	recipe = replace(recipe, model=read_model_config(source))
	config = replace(train_config or config, **overrides)
	mix = mix or dataset_mix(dataset_dir, recipe)
	make_loader = mix_loaders(
		dataset_dir,
		config.batch_size,
		recipe.model.context_length,
		mix,
		seed=config.seed,
		instruction_weight=config.instruction_loss_weight,
	)

	if config.eval_batches > 0:
		# validation visits each held-out conversation once: no more batches than that takes
		held_out = make_loader("validation", None).num_conversations
		config = replace(config, eval_batches=min(config.eval_batches, math.ceil(held_out / config.batch_size)))

	if not (run_dir / "checkpoints" / "last").exists() and config.eval_batches > 0:
		# The loss of the starting weights on the same validation batches: the "before" of the run.
		loader = make_loader("validation", None)
		batches = [loader.next_batch() for _ in range(config.eval_batches)]
		loader.close()
		before = validation_loss(load_model(source), batches)
		if _is_main():
			run_dir.mkdir(parents=True, exist_ok=True)
			info = {"from": str(source.resolve()), "dataset": str(dataset_dir.resolve()), "val_loss_before": before}
			(run_dir / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
			print(f"fine-tuning {source}; validation loss (answer tokens) before: {before:.4f}")
	return build_trainer(
		recipe,
		dataset_dir,
		run_dir,
		init_from=source,
		kind="instruct",
		train_config=config,
		make_loader=make_loader,
		progress=progress,
	)


def record_result(run_dir: str | Path, result: TrainResult) -> None:
	"""Add where a fine-tuning stopped and its validation loss to RUN_DIR/finetune.json."""
	path = Path(run_dir) / INFO_FILE
	if path.is_file() and _is_main():
		info = json.loads(path.read_text(encoding="utf-8"))
		info.update(step=result.step, val_loss_after=result.val_loss, best_val_loss=result.best_val_loss)
		path.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")


def finetune(from_run: str | Path, dataset_dir: str | Path, run_dir: str | Path, **options: Any) -> TrainResult:
	"""Fine-tune (or resume fine-tuning) `from_run` into `run_dir`, alone or under torchrun.

	Takes `build_finetuner`'s options: preset, mix, checkpoint ("auto" | "best" | "last"),
	train_config, progress, and train-config overrides such as max_steps=100.
	"""
	try:
		trainer = build_finetuner(from_run, dataset_dir, run_dir, **options)
		try:
			result = trainer.fit()
		finally:
			trainer.close()
	finally:
		cleanup_distributed()
	record_result(run_dir, result)
	return result
