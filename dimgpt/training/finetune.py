"""Fine-tuning: from a pretrained run's checkpoint to a chat model.

What fine-tuning adds to `dimgpt.training.build.train(kind="instruct")`: the choice of the
pretrained run's checkpoint (best or last), a run directory kept apart from it, and the loss of the
starting weights recorded beside the run. The recipe is the `finetune` recipe saved with the
pretrained run (a preset given overrides it). The pretrained run is only read: the new run lives in
its own directory (checkpoints, metrics, plots, vocab.txt) and resumes from there when restarted.

	RUN_DIR/finetune.json   where it started from; validation loss (answer tokens) before and after

Like every instruct run, it keeps the embedding's ⮜padding⮞ row as it started
(`dimgpt.training.build.keep_padding_row`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dimgpt import runs
from dimgpt.config import InstructMix, Preset, TrainConfig
from dimgpt.errors import UsageError
from dimgpt.training.build import build_trainer, refused_runs_leave_nothing
from dimgpt.training.distributed import cleanup_distributed
from dimgpt.training.trainer import Trainer, TrainResult


def _is_main() -> bool:
	return int(os.environ.get("RANK", "0")) == 0  # under torchrun, only rank 0 writes finetune.json


def _check_separate(source: Path, run_dir: Path) -> None:
	"""Refuse a fine-tuning run directory that is, holds or lies inside the pretrained run."""
	source, run_dir = source.resolve(), run_dir.resolve()
	pretrain_run = source.parent.parent if source.parent.name == runs.CHECKPOINTS else source
	for a, b in ((run_dir, pretrain_run), (pretrain_run, run_dir)):
		if a == b or b in a.parents:
			raise UsageError(
				f"the fine-tuning run directory {run_dir} overlaps the pretrained run {pretrain_run}; "
				"give the fine-tuning its own --run-dir (the pretrained run is never written to)"
			)


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

	`build_trainer(kind="instruct", init_from=CHECKPOINT)`, the one fine-tuning path, with the
	pretrained run's checkpoint chosen by `checkpoint` and kept apart from `run_dir`: the model shape
	comes from the checkpoint; the train config is the `finetune` recipe saved with it (resuming: the
	run's own), or `preset.finetune` when a preset is given, or `train_config`, with `overrides`
	replacing its fields (`max_steps=100`, ...). `mix` defaults to the dataset's `instruct_mix`, else
	the recipe's. If `run_dir` holds a run, the Trainer resumes it; otherwise the validation loss of
	the starting weights goes to RUN_DIR/finetune.json first.
	"""
	source = runs.checkpoint(from_run, checkpoint)
	dataset_dir, run_dir = Path(dataset_dir), Path(run_dir)
	_check_separate(source, run_dir)
	options = {"mix": mix, "train_config": train_config, "progress": progress, **overrides}
	trainer = build_trainer(preset, dataset_dir, run_dir, init_from=source, kind="instruct", **options)
	if not trainer.resumed and trainer.val_batches:
		# The loss of the starting weights on the run's validation batches: the "before" of the run.
		result = trainer.evaluate()
		trainer.log_validation(result)  # step 0 of the plot: where fine-tuning starts from
		before = result["val_loss"]
		if trainer.env.is_main:
			runs.write_finetune_info(
				run_dir,
				**{"from": str(source.resolve()), "dataset": str(dataset_dir.resolve()), "val_loss_before": before},
			)
			print(f"fine-tuning {source}; validation loss (answer tokens) before: {before:.4f}")
	return trainer


def record_result(run_dir: str | Path, result: TrainResult) -> None:
	"""Add where a fine-tuning stopped and its validation loss to RUN_DIR/finetune.json."""
	if runs.read_finetune_info(run_dir) and _is_main():
		runs.write_finetune_info(
			run_dir, step=result.step, val_loss_after=result.val_loss, best_val_loss=result.best_val_loss
		)


def finetune(from_run: str | Path, dataset_dir: str | Path, run_dir: str | Path, **options: Any) -> TrainResult:
	"""Fine-tune (or resume fine-tuning) `from_run` into `run_dir`, alone or under torchrun.

	Takes `build_finetuner`'s options: preset, mix, checkpoint ("auto" | "best" | "last"),
	train_config, progress, and train-config overrides such as max_steps=100.
	"""
	try:
		with refused_runs_leave_nothing(run_dir):
			trainer = build_finetuner(from_run, dataset_dir, run_dir, **options)
			try:
				result = trainer.fit()
			finally:
				trainer.close()
	finally:
		cleanup_distributed()
	record_result(run_dir, result)
	return result
