"""Assembling a run: which recipe, dataset, loaders and starting weights a `Trainer` gets.

`train()` pretrains (or resumes) a run on a dataset folder; `kind="instruct"` trains on the
dataset's conversations instead, the one fine-tuning path (`dimgpt.training.finetune` adds what
starting from a pretrained run needs). Both run alone or under `torchrun`.

The recipe (a `Preset`: model, data, train and fine-tuning configs) is the run's own when it is
resumed, else the one saved with the checkpoint it starts from, else `tiny`; a preset given
overrides it (`resolve_recipe`). A run started from weights takes their model shape.

`decay()` turns a checkpoint of a warmup-stable-decay run's stable phase into a final model, in a
copy of the run (the `decay` command).
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dimgpt import runs
from dimgpt.config import DataConfig, InstructMix, ModelConfig, Preset, TrainConfig
from dimgpt.data.tokenizer import PADDING, Tokenizer
from dimgpt.errors import UsageError, UserError
from dimgpt.presets import get_preset, preset_for_model
from dimgpt.training.checkpoint import has_checkpoint, load_training_state
from dimgpt.training.distributed import Distributed, cleanup_distributed, setup_distributed
from dimgpt.training.lock import RunLock
from dimgpt.training.schedule import DEFAULT_COOLDOWN, decay_start
from dimgpt.training.trainer import Loader, Trainer, TrainResult


def loaders(
	kind: str, dataset_dir: str | Path, model_config: ModelConfig, config: TrainConfig, mix: InstructMix | None = None
) -> Callable[[str, Distributed | None], Loader]:
	"""A function `(split, env) -> loader` over the dataset in `dataset_dir`.

	"pretrain": DimensionGPT windows of the pretraining shards; "instruct": conversations drawn by
	`mix` (default: the dataset's fine-tuning mix), the one conversation loader of fine-tuning.
	"""
	from dimgpt.data.loader import PretrainLoader
	from dimgpt.data.mix import mix_loaders

	if kind == "instruct":
		return mix_loaders(
			dataset_dir,
			config.batch_size,
			model_config.context_length,
			mix or (runs.dataset_config(dataset_dir) or DataConfig()).instruct_mix,
			seed=config.seed,
			instruction_weight=config.instruction_loss_weight,
		)
	if kind != "pretrain":
		raise UsageError(f"kind must be 'pretrain' or 'instruct', got {kind!r}")

	def make(split: str, env: Distributed | None) -> Loader:
		env = env or Distributed()
		common = {"seed": config.seed, "rank": env.rank, "world_size": env.world_size}
		return PretrainLoader(dataset_dir, split, config.batch_size, model_config.context_length, **common)

	return make


def resolve_recipe(
	preset: Preset | str | None, run_dir: str | Path, kind: str = "pretrain", start_from: str | Path | None = None
) -> tuple[Preset, TrainConfig]:
	"""The recipe of a run and the train config it follows.

	A run takes the recipe of the run it continues (RUN_DIR's own, train config included), else of the
	checkpoint it starts from (`start_from`: its `train` recipe to pretrain, its `finetune` recipe to
	fine-tune); `preset` overrides both. Weights saved without a recipe take the catalogue preset of
	the same model shape. A new run with none of these is a `tiny` run.
	"""
	if preset is not None:
		recipe = get_preset(preset) if isinstance(preset, str) else preset
		return recipe, recipe.train if kind == "pretrain" else recipe.finetune
	own = runs.saved_recipe(runs.last_checkpoint(run_dir))
	if own is not None:
		return own, own.train
	if start_from is None:
		recipe = get_preset("tiny")
	else:
		recipe = runs.saved_recipe(start_from) or _catalogue_recipe(start_from)
	return recipe, recipe.train if kind == "pretrain" else recipe.finetune


def _catalogue_recipe(start_from: str | Path) -> Preset:
	from dimgpt.model.loading import read_model_config

	model = read_model_config(start_from)
	recipe = preset_for_model(model)
	if recipe is None:
		raise UsageError(
			f"{start_from} holds no recipe.json and its model matches no preset: pass the recipe with --preset NAME"
		)
	return recipe


def build_trainer(
	preset: Preset | str | None,
	dataset_dir: str | Path,
	run_dir: str | Path,
	*,
	init_from: str | Path | None = None,
	kind: str = "pretrain",
	mix: InstructMix | None = None,
	train_config: TrainConfig | None = None,
	make_loader: Callable[[str, Distributed | None], Loader] | None = None,
	progress: bool = True,
	**overrides: Any,
) -> Trainer:
	"""A Trainer for a run on `dataset_dir` in `run_dir`, resuming it if it holds one.

	The recipe is the run's own when resuming, else the one saved with `init_from` (see
	`resolve_recipe`); `preset` (a name or a `Preset`) overrides it. A run started from `init_from`
	takes the model shape of those weights; a resumed run refuses a model other than its own. `kind="instruct"` trains on conversations
	drawn by `mix` (default: the dataset's mix) with the recipe's `finetune` train config, validating
	on each held-out conversation once. `train_config` replaces the chosen train config, `overrides`
	its fields (`max_steps=100`, ...). `make_loader(split, env)` replaces the dataset's loaders.
	Under torchrun, joins the process group.
	"""
	from dimgpt.model.loading import read_model_config

	recipe, config = resolve_recipe(preset, run_dir, kind, init_from)
	config = replace(train_config or config, **overrides)
	dataset_dir, run_dir = Path(dataset_dir), Path(run_dir)
	if init_from is not None:  # the shape of the starting weights (a resumed run must still match it)
		recipe = replace(recipe, model=read_model_config(init_from))
	recipe = replace(recipe, data=runs.dataset_config(dataset_dir) or recipe.data)
	_check_vocab(dataset_dir, recipe.model)
	env = setup_distributed()
	# The data is opened first: a bad dataset is refused before the run directory is touched.
	if make_loader is None:
		mix = mix or (runs.dataset_mix(dataset_dir, recipe) if kind == "instruct" else None)
		make_loader = loaders(kind, dataset_dir, recipe.model, config, mix)
	train_loader = make_loader("train", env)
	val_loader = make_loader("validation", env) if config.eval_batches > 0 else None
	held_out = getattr(val_loader, "num_conversations", None)
	if held_out is not None:  # conversations: validation visits each held-out one once, no more batches
		config = replace(config, eval_batches=min(config.eval_batches, math.ceil(held_out / config.batch_size)))
	created = not run_dir.exists()
	lock = None
	try:
		if env.is_main:
			lock = RunLock(run_dir)  # one process per run directory, until Trainer.close()
			_copy_vocab(dataset_dir, run_dir)  # the run carries its vocabulary, for sampling and export
		trainer = Trainer(
			recipe.model,
			config,
			run_dir,
			train_loader,
			val_loader,
			recipe=recipe,
			init_from=init_from,
			env=env,
			progress=progress,
			epoch_tokens=_dataset_tokens(train_loader),
			token_bytes=_token_bytes(dataset_dir),
		)
		if kind == "instruct":
			keep_padding_row(trainer)
	except BaseException:
		for loader in (train_loader, val_loader):
			if hasattr(loader, "close"):
				loader.close()
		if lock is not None:
			lock.release()
			if created:  # refused starting weights and the like: leave no half-made run behind
				shutil.rmtree(run_dir, ignore_errors=True)
		raise
	trainer.lock = lock
	return trainer


def keep_padding_row(trainer: Trainer) -> None:
	"""Put the embedding's ⮜padding⮞ row (id 1) back after every optimizer step: it stays as it started.

	The release's embedding had `padding_idx=1`, so its pretraining never updated that row from the
	input side. Here the row would move all the same: the output layer is the same matrix (its softmax
	pushes every row), AdamW decays it, and Adam's moments keep moving it. Restoring it after each step
	keeps the released (or pretrained) row exactly, resumed runs included (docs/dimensiongpt.md,
	"Fine-tuning").
	"""
	weight = trainer.model.token_embedding.weight
	row = weight[PADDING].detach().clone()

	def restore(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
		with torch.no_grad():
			weight[PADDING] = row

	trainer.optimizer.register_step_post_hook(restore)


def _token_bytes(dataset_dir: Path) -> np.ndarray | None:
	"""UTF-8 bytes of each token of the dataset's vocabulary, for the validation's bits per byte."""
	vocab = dataset_dir / runs.VOCAB_FILE
	return Tokenizer.load(vocab).byte_lengths() if vocab.is_file() else None


def train(preset: Preset | str | None, dataset_dir: str | Path, run_dir: str | Path, **options: Any) -> TrainResult:
	"""Train (or resume) a run on `dataset_dir` into `run_dir`, alone or under torchrun.

	`preset`: None takes the run's own recipe (see `resolve_recipe`). Takes `build_trainer`'s options:
	init_from, kind ("pretrain" | "instruct"), train_config, make_loader, progress, and train-config
	overrides such as max_steps=100.
	"""
	try:
		with refused_runs_leave_nothing(run_dir):
			trainer = build_trainer(preset, dataset_dir, run_dir, **options)
			try:
				return trainer.fit()
			finally:
				trainer.close()
	finally:
		cleanup_distributed()


@contextmanager
def refused_runs_leave_nothing(run_dir: str | Path) -> Iterator[None]:
	"""Remove the run directory this call made when a user error (bad data met at the first batch, ...)
	stops the run before its first checkpoint: a refused command leaves nothing behind."""
	run_dir = Path(run_dir)
	created = not run_dir.exists()
	try:
		yield
	except UserError:
		if created and int(os.environ.get("RANK", "0")) == 0 and not (run_dir / "checkpoints").exists():
			shutil.rmtree(run_dir, ignore_errors=True)
		raise


def decay(
	run_dir: str | Path,
	dataset_dir: str | Path,
	steps: int | None = None,
	out: str | Path | None = None,
	*,
	progress: bool = True,
) -> TrainResult:
	"""Decay the stable phase of the WSD run in `run_dir` into a final model in `out`.

	The run's last checkpoint (step S) is copied to `out` (default: RUN_DIR-decayed-S) and trained for
	`steps` more steps (default: S / 4, a fifth of the whole) while the rate falls linearly to min_lr.
	RUN_DIR stays as it was: it can be trained on and decayed again later. Calling this again with the
	same arguments resumes an interrupted decay.
	"""
	run_dir = Path(run_dir)
	last = runs.last_checkpoint(run_dir)
	state = load_training_state(last)
	recipe = runs.saved_recipe(last)
	if recipe is None:
		raise UsageError(f"{last} holds no recipe.json: decay needs the run's own train config (a run made by train)")
	config, step = recipe.train, state["step"]
	if config.schedule != "wsd":
		raise UsageError(
			f"{run_dir} follows the {config.schedule} schedule, which decays on its own; "
			"decay is for runs trained with --set schedule=wsd"
		)
	if state.get("decay_from") is not None or step >= decay_start(config):
		raise UsageError(
			f"{run_dir} is already in its final decay (step {step}): let it finish with "
			f"python -m dimgpt train --run-dir {run_dir} --data {dataset_dir}"
		)
	steps = steps if steps is not None else max(1, math.ceil(step * DEFAULT_COOLDOWN / (1 - DEFAULT_COOLDOWN)))
	if steps < 1:
		raise UsageError(f"--steps must be at least 1, got {steps}")
	out = Path(out) if out is not None else run_dir.with_name(f"{run_dir.name}-decayed-{step}")
	if not has_checkpoint(runs.last_checkpoint(out)):
		shutil.copytree(last, runs.last_checkpoint(out), dirs_exist_ok=True)
		for name in (runs.METRICS_FILE, runs.VOCAB_FILE):  # the curve goes on from the stable run's
			if (run_dir / name).is_file():
				shutil.copyfile(run_dir / name, out / name)
	end = step + steps
	budget = {"max_steps": end, "max_tokens": None, "max_seconds": None}
	return train(None, dataset_dir, out, progress=progress, decay_steps=end, cooldown_steps=steps, **budget)


def _dataset_tokens(loader: Any) -> int | None:
	"""Tokens in one pass over the training split (for the epoch count), when the loader tells."""
	sources = getattr(loader, "sources", None)
	return sum(int(s.tokens) for s in sources) if sources else None


def _check_vocab(dataset_dir: Path, model_config: ModelConfig) -> None:
	vocab = dataset_dir / runs.VOCAB_FILE
	if vocab.is_file():
		tokens = Tokenizer.load(vocab).vocab_size  # a damaged vocab.txt is named, line and all
		runs.check_vocab(tokens, model_config.vocab_size, vocab, "this run's model")


def _copy_vocab(dataset_dir: Path, run_dir: Path) -> None:
	"""The dataset's vocab.txt into the run, unless the run already holds the same file (a resumed run
	rewrites nothing needlessly)."""
	source, target = dataset_dir / runs.VOCAB_FILE, run_dir / runs.VOCAB_FILE
	if source.is_file() and (not target.is_file() or target.read_bytes() != source.read_bytes()):
		shutil.copyfile(source, target)
