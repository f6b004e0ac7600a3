"""The training loop: AdamW or Muon, warmup + cosine or WSD, accumulation, clipping, mixed precision, resume.

One `Trainer` serves pretraining and fine-tuning alike: it takes the model config, the train
config and loaders (anything with `next_batch() -> (x, y, w)`, `state_dict()` and
`load_state_dict()`) and writes into the run directory (its layout: `dimgpt.runs`) the last and
best checkpoints, the metrics and their plots; a STOP file there stops it gracefully.

Which recipe, dataset and weights a run uses is decided in `dimgpt.training.build` (`train`,
`finetune`), which hands this loop everything ready.
"""

from __future__ import annotations

import math
import random
import signal
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from dimgpt import runs
from dimgpt.config import ModelConfig, Preset, TrainConfig
from dimgpt.device import pick_device, supports_bf16
from dimgpt.errors import MismatchError
from dimgpt.model.loading import load_model
from dimgpt.model.transformer import Transformer
from dimgpt.training.checkpoint import (
	check_model_config,
	has_checkpoint,
	load_training_state,
	recover,
	save_checkpoint,
)
from dimgpt.training.distributed import (
	Distributed,
	all_reduce,
	barrier,
	gather_objects,
)
from dimgpt.training.lock import RunLock
from dimgpt.training.loss import weighted_sums
from dimgpt.training.metrics import MetricsLog, Smoother, flops_per_token, peak_flops
from dimgpt.training.optim import load_optimizer_state, make_optimizer, set_lr
from dimgpt.training.plots import plot_metrics
from dimgpt.training.schedule import DEFAULT_COOLDOWN, decay_start, learning_rate, lr_factor, timed_decay

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class Loader(Protocol):
	def next_batch(self) -> Batch: ...
	def state_dict(self) -> dict[str, Any]: ...
	def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class TrainResult:
	"""How a call to `Trainer.fit` ended."""

	reason: str  # done | stop-file | early-stop | interrupted | terminated
	step: int
	tokens: int
	val_loss: float | None
	best_val_loss: float | None
	run_dir: Path


def resolve_precision(precision: str, device: torch.device) -> str:
	"""`auto`: bf16 on CUDA when supported, fp16 (with a gradient scaler) on older GPUs, fp32 on CPU."""
	if precision != "auto":
		return precision
	if device.type == "cuda":
		return "bf16" if supports_bf16(device) else "fp16"
	return "fp32"


def _rng_state(device: torch.device) -> dict[str, Any]:
	kind, keys, pos, has_gauss, gauss = np.random.get_state()
	state = {
		"python": random.getstate(),
		"numpy": [kind, keys.tolist(), pos, has_gauss, gauss],
		"torch": torch.get_rng_state(),
	}
	if device.type == "cuda":
		state["cuda"] = torch.cuda.get_rng_state(device)
	return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
	random.setstate(_as_tuple(state["python"]))
	kind, keys, pos, has_gauss, gauss = state["numpy"]
	np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
	torch.set_rng_state(state["torch"].cpu())
	if device.type == "cuda" and "cuda" in state:
		torch.cuda.set_rng_state(state["cuda"].cpu(), device)


def _duration(seconds: float) -> str:
	return f"{seconds / 60:g} min" if seconds >= 60 and seconds % 60 == 0 else f"{seconds:g} s"


def _as_tuple(value: Any) -> Any:
	return tuple(_as_tuple(v) for v in value) if isinstance(value, list | tuple) else value


class Trainer:
	"""Trains `model_config` with `train_config` on `train_loader`, resuming RUN_DIR if it holds a run."""

	def __init__(
		self,
		model_config: ModelConfig,
		train_config: TrainConfig,
		run_dir: str | Path,
		train_loader: Loader,
		val_loader: Loader | None = None,
		*,
		recipe: Preset | None = None,
		init_from: str | Path | None = None,
		env: Distributed | None = None,
		progress: bool = True,
		epoch_tokens: int | None = None,
		token_bytes: np.ndarray | None = None,
	) -> None:
		"""token_bytes: UTF-8 bytes of each token's text (`Tokenizer.byte_lengths`), for the validation's
		bits per byte (none without it)."""
		self.model_config, self.config = model_config, train_config
		# saved with every checkpoint, with this run's model and train configs, for whoever continues it
		self.recipe = replace(recipe, model=model_config, train=train_config) if recipe is not None else None
		self.run_dir = Path(run_dir)
		self.lock: RunLock | None = None  # the run directory's lock, released by close() (see build_trainer)
		self.end_step: int | None = None  # where the progress bar ends: the first budget to run out
		self.stop_detail = ""  # which budget stopped the last fit()
		self.last_dir, self.best_dir = runs.last_checkpoint(self.run_dir), runs.best_checkpoint(self.run_dir)
		self.train_loader, self.val_loader = train_loader, val_loader
		self.env = env or Distributed(device=pick_device())
		self.device = self.env.device
		self.token_bytes = None
		if token_bytes is not None:  # spare slots of a model vocabulary larger than the tokenizer's: no text
			self.token_bytes = torch.zeros(model_config.vocab_size, device=self.device)
			self.token_bytes[: len(token_bytes)] = torch.as_tensor(token_bytes, dtype=torch.float32)
		self.progress, self.epoch_tokens = progress, epoch_tokens
		self.precision = resolve_precision(train_config.precision, self.device)
		# grad_accum is the recipe's, for one process: ranks share it so the global batch stays the same.
		self.grad_accum = max(1, train_config.grad_accum // self.env.world_size)
		if train_config.grad_accum % self.env.world_size and self.env.is_main:
			print(
				f"note: grad_accum={train_config.grad_accum} is not a multiple of {self.env.world_size} processes; "
				f"each does {self.grad_accum}, so a step holds {self.grad_accum * self.env.world_size} micro-batches"
			)
		self.tokens_per_step = (
			train_config.batch_size * self.grad_accum * model_config.context_length * self.env.world_size
		)
		self.step, self.tokens, self.skipped, self.nonfinite_in_row, self.elapsed = 0, 0, 0, 0, 0.0
		self.best_val_loss: float | None = None
		self.evals_since_best = 0  # validations since the best one (early stopping: config.patience)
		self.val_loss: float | None = None
		self.smooth_loss, self.smooth_accuracy = Smoother(), Smoother()
		self.decay_from: int | None = None  # the step a time budget started a WSD run's decay at
		self._signal: int | None = None

		if self.env.is_main:  # one process repairs a save killed half-way; the others wait, then read
			recover(self.last_dir)
			recover(self.best_dir)
		barrier(self.env)
		self.resumed = has_checkpoint(self.last_dir)
		state = load_training_state(self.last_dir) if self.resumed else None
		if state is not None:
			self.model = load_model(self.last_dir)
			check_model_config(self.model.config, model_config, self.last_dir)
		elif init_from is not None:
			self.model = load_model(init_from)
			check_model_config(self.model.config, model_config, init_from)
		else:
			torch.manual_seed(train_config.seed)
			self.model = Transformer(model_config)
		self.model.to(self.device)
		self.optimizer = make_optimizer(self.model, train_config, self.device)
		self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
		if self.precision == "fp32":
			self.autocast = nullcontext
		else:
			dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
			self.autocast = lambda: torch.autocast(self.device.type, dtype=dtype)
		if state is not None:
			self._load_state(state)

		self.val_batches = [val_loader.next_batch() for _ in range(train_config.eval_batches)] if val_loader else []
		self.train_model: nn.Module = self.model
		if train_config.compile:
			self.train_model = torch.compile(self.model)
		if self.env.enabled:
			device_ids = [self.device.index] if self.device.type == "cuda" else None
			self.train_model = DistributedDataParallel(self.train_model, device_ids=device_ids)
		self.flops_per_token = flops_per_token(model_config)
		self.peak_flops = peak_flops(self.device)
		self.metrics = (
			MetricsLog(self.run_dir / runs.METRICS_FILE, self.step if state else None) if self.env.is_main else None
		)

	# --- state ------------------------------------------------------------------------------------

	def _load_state(self, state: dict[str, Any]) -> None:
		if state["world_size"] != self.env.world_size:
			raise MismatchError(
				f"{self.last_dir} was saved by {state['world_size']} process(es) but this run has "
				f"{self.env.world_size}; resume with the same number of processes (each holds its loader position)"
			)
		saved = runs.saved_recipe(self.last_dir)
		changed = [
			f"{f.name}: {getattr(saved.train, f.name)!r} -> {getattr(self.config, f.name)!r}"
			for f in fields(TrainConfig)
			if saved is not None and getattr(saved.train, f.name) != getattr(self.config, f.name)
		]
		if changed and self.env.is_main:
			print(f"resuming {self.last_dir} with a changed train config: {'; '.join(changed)}")
		trained_with = "muon" if "muon" in state["optimizer"] else "adamw"  # Muon's state is one dict per optimizer
		if trained_with != self.config.optimizer:
			raise MismatchError(
				f"{self.last_dir} was trained with optimizer={trained_with!r}, this run asks for "
				f"{self.config.optimizer!r}; resume with --set optimizer={trained_with}, or start a new run "
				"directory from its weights (--init-from)"
			)
		load_optimizer_state(self.optimizer, state["optimizer"])
		self.scaler.load_state_dict(state["scaler"])
		self.train_loader.load_state_dict(state["loaders"][self.env.rank])
		_set_rng_state(state["rng"][self.env.rank], self.device)
		self.step, self.tokens, self.skipped = state["step"], state["tokens"], state["skipped"]
		self.nonfinite_in_row, self.elapsed = state["nonfinite_in_row"], state["elapsed"]
		self.best_val_loss, self.val_loss = state["best_val_loss"], state["val_loss"]
		self.evals_since_best = state.get("evals_since_best", 0)  # absent from checkpoints before early stopping
		self.smooth_loss.load_state_dict(state["smooth_loss"])
		self.smooth_accuracy.load_state_dict(state["smooth_accuracy"])
		self.decay_from = state.get("decay_from")

	def _state(self) -> dict[str, Any]:
		"""The training state (every rank calls this: it gathers the loader positions)."""
		return {
			"step": self.step,
			"tokens": self.tokens,
			"skipped": self.skipped,
			"nonfinite_in_row": self.nonfinite_in_row,
			"elapsed": self.elapsed,
			"best_val_loss": self.best_val_loss,
			"evals_since_best": self.evals_since_best,
			"val_loss": self.val_loss,
			"smooth_loss": self.smooth_loss.state_dict(),
			"smooth_accuracy": self.smooth_accuracy.state_dict(),
			"decay_from": self.decay_from,
			"optimizer": self.optimizer.state_dict(),
			"scaler": self.scaler.state_dict(),
			"loaders": gather_objects(self.train_loader.state_dict(), self.env),
			"rng": gather_objects(_rng_state(self.device), self.env),
			"world_size": self.env.world_size,
		}

	def save(self, directory: Path | None = None) -> None:
		"""Checkpoint to `last` (or `directory`); rank 0 writes, the others only hand in their state."""
		state = self._state()
		if self.env.is_main:
			self.metrics.sync()
			save_checkpoint(directory or self.last_dir, self.model, state, self.recipe)
		barrier(self.env)
		if directory is None:
			self._saved_step = self.step

	# --- one optimizer step -------------------------------------------------------------------------

	def _forward(
		self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor
	) -> tuple[torch.Tensor, torch.Tensor]:
		"""Weighted sums (not means) of the token losses and of the argmax hits."""
		with self.autocast():
			logits = model(x)
		return weighted_sums(logits, y, w)

	def train_step(self) -> dict[str, float]:
		"""One update on `grad_accum` micro-batches, as one big batch would do it."""
		self.train_model.train()
		batches = [
			[t.to(self.device, non_blocking=True) for t in self.train_loader.next_batch()]
			for _ in range(self.grad_accum)
		]
		# Normalise by the loss weight of the whole (all ranks, all micro-batches) batch, so that k
		# micro-batches of unequal padding give exactly the gradient of one big batch.
		weight = all_reduce(sum(w.sum(dtype=torch.float32) for _, _, w in batches), self.env)
		weight = weight.clamp(min=1e-6)
		schedule = self.schedule
		lr = learning_rate(self.step, schedule)
		set_lr(self.optimizer, lr_factor(self.step, schedule))
		loss_sum = torch.zeros((), device=self.device)
		hits = torch.zeros((), device=self.device)
		for i, (x, y, w) in enumerate(batches):
			last = i == len(batches) - 1
			sync = self.train_model.no_sync() if self.env.enabled and not last else nullcontext()
			with sync:
				batch_loss, batch_hits = self._forward(self.train_model, x, y, w)
				# DDP averages gradients over ranks; the world size undoes that to get the global sum / weight.
				self.scaler.scale(batch_loss * self.env.world_size / weight).backward()
			loss_sum += batch_loss.detach()
			hits += batch_hits
		if self.scaler.is_enabled():
			self.scaler.unscale_(self.optimizer)
		max_norm = self.config.grad_clip if self.config.grad_clip > 0 else math.inf
		grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
		sums = all_reduce(torch.stack([loss_sum, hits]), self.env)
		loss, accuracy = (sums / weight).tolist()
		grad_norm = grad_norm.item()
		finite = math.isfinite(loss) and math.isfinite(grad_norm)
		if finite:
			self.scaler.step(self.optimizer)
		if self.scaler.is_enabled():
			self.scaler.update()
		self.optimizer.zero_grad(set_to_none=True)
		return {"loss": loss, "accuracy": accuracy, "grad_norm": grad_norm, "lr": lr, "finite": finite}

	@torch.no_grad()
	def evaluate(self) -> dict[str, float]:
		"""Loss, accuracy and bits per byte on the fixed validation batches (summed over ranks).

		Bits per byte: the loss of the scored tokens that are text (not ⮜end-of-text⮞, ⮜user⮞, ...), in
		bits, over the UTF-8 bytes of the text they spell, which is the cleaned text (`evaluate` on raw
		text counts the raw bytes: the two differ where cleaning changed characters)."""
		self.model.eval()
		sums = torch.zeros(5, device=self.device)
		for batch in self.val_batches:
			x, y, w = (t.to(self.device) for t in batch)
			with self.autocast():
				logits = self.model(x)
			loss_sum, hits = weighted_sums(logits, y, w)
			text_loss = text_bytes = torch.zeros((), device=self.device)
			if self.token_bytes is not None:
				nbytes = self.token_bytes[y]
				text_loss, _ = weighted_sums(logits, y, w * (nbytes > 0))
				text_bytes = (w * nbytes).sum()
			sums += torch.stack([loss_sum, hits, w.sum(dtype=torch.float32), text_loss, text_bytes])
		all_reduce(sums, self.env)
		loss, hits, weight, text_loss, text_bytes = sums.tolist()
		if weight <= 0:  # nothing to score (no answer token in the validation batches): no figure, not 0
			return {"val_loss": math.nan, "val_accuracy": math.nan}
		result = {"val_loss": loss / weight, "val_accuracy": hits / weight}
		if text_bytes > 0:
			result["val_bits_per_byte"] = text_loss / math.log(2) / text_bytes
		return result

	# --- the loop -----------------------------------------------------------------------------------

	def _handle_signal(self, signum: int, frame: Any) -> None:
		if self._signal is not None and signum == signal.SIGINT:
			raise KeyboardInterrupt  # a second Ctrl-C: stop now, the last checkpoint stays as it was
		self._signal = signum
		if self.env.is_main:
			tqdm.write(f"{signal.Signals(signum).name}: saving a checkpoint after this step, then stopping")

	@property
	def schedule(self) -> TrainConfig:
		"""The train config the learning rate follows: WSD's decay moved where a time budget started it."""
		return timed_decay(self.config, self.decay_from) if self.decay_from is not None else self.config

	def _stop_reason(self, started: float) -> str | None:
		"""Why to stop before the next step, agreed on by all ranks (and whether to start a timed decay)."""
		c = self.config
		elapsed = self.elapsed + time.perf_counter() - started
		stop_file = self.run_dir / runs.STOP_FILE
		# WSD under a time budget: the decay starts at 80 % of the time; the run then ends with it.
		timed = c.schedule == "wsd" and c.max_seconds is not None
		decaying = self.decay_from is not None
		flags = torch.tensor(
			[
				timed and not decaying and elapsed >= (1 - DEFAULT_COOLDOWN) * c.max_seconds,
				c.max_steps is not None and self.step >= c.max_steps,
				c.max_tokens is not None and self.tokens >= c.max_tokens,
				c.max_seconds is not None and not decaying and elapsed >= c.max_seconds,
				decaying and self.step >= self.schedule.decay_steps,
				self.env.is_main and stop_file.exists(),
				c.patience > 0 and self.evals_since_best >= c.patience,
				self._signal == signal.SIGINT,
				self._signal is not None and self._signal != signal.SIGINT,
			],
			dtype=torch.float32,
			device=self.device,
		)
		start_decay, *flags = all_reduce(flags, self.env, op="max").tolist()
		if start_decay and self.step < decay_start(c) and self.step > 0:
			self.decay_from = self.step
			flags[2] = False  # the time budget now ends with the decay, not at max_seconds
			if self.env.is_main:
				tqdm.write(
					f"step {self.step}: 80 % of the time budget spent, the learning rate decays over the next "
					f"{self.schedule.cooldown_steps} steps"
				)
		budgets = (
			f"step budget of {c.max_steps:,}" if c.max_steps is not None else "",
			f"token budget of {c.max_tokens:,}" if c.max_tokens is not None else "",
			f"time budget of {_duration(c.max_seconds)}" if c.max_seconds is not None else "",
			f"time budget of {_duration(c.max_seconds)}, its decay done" if c.max_seconds is not None else "",
		)
		reasons = ("done", "done", "done", "done", "stop-file", "early-stop", "interrupted", "terminated")
		for i, (flag, reason) in enumerate(zip(flags, reasons)):
			if flag:
				self.stop_detail = budgets[i] if i < len(budgets) else ""
				if reason == "early-stop":
					self.stop_detail = (
						f"no better validation loss in {c.patience} validations; the best, "
						f"{self.best_val_loss:.3f}, is in {self.best_dir}"
					)
				if reason == "stop-file" and self.env.is_main:
					stop_file.unlink(missing_ok=True)
				return reason
		return None

	def _end_step(self, elapsed: float, steps: int, seconds: float) -> int | None:
		"""The step the run will stop at: the first of its budgets to run out, a time budget converted
		at the pace of this session (`steps` in `seconds`); None while nothing bounds it."""
		c = self.config
		ends = []
		if c.max_steps is not None:
			ends.append(c.max_steps)
		if c.max_tokens is not None:
			ends.append(math.ceil(c.max_tokens / self.tokens_per_step))
		if c.max_seconds is not None and steps:
			ends.append(self.step + max(0, math.ceil((c.max_seconds - elapsed) * steps / seconds)))
		return max(min(ends), self.step) if ends else None

	def log_validation(self, result: dict[str, float]) -> None:
		"""Record a validation result at the current step (a fine-tuning's starting loss, on its plot)."""
		self._log({"step": self.step, "tokens": self.tokens, **result})

	def _log(self, record: dict[str, Any]) -> None:
		if self.metrics is not None:
			self.metrics.write(record)

	def _validate(self) -> None:
		if not self.val_batches:
			return
		result = self.evaluate()
		self.val_loss = result["val_loss"]
		self._log({"step": self.step, "tokens": self.tokens, **result})
		if math.isfinite(self.val_loss) and (self.best_val_loss is None or self.val_loss < self.best_val_loss):
			self.best_val_loss = self.val_loss
			self.evals_since_best = 0
			self.save(self.best_dir)
		elif math.isfinite(self.val_loss):
			self.evals_since_best += 1
		self._validated_step = self.step

	def fit(self) -> TrainResult:
		"""Train until the budget, a STOP file, Ctrl-C or SIGTERM; checkpoint; return why it stopped."""
		c = self.config
		handlers = {}
		if threading.current_thread() is threading.main_thread():
			for signum in (signal.SIGINT, signal.SIGTERM):
				handlers[signum] = signal.signal(signum, self._handle_signal)
		self._signal = None
		self._saved_step = self._validated_step = self.step
		self.stop_detail = ""
		self.end_step = self._end_step(self.elapsed, 0, 0.0)
		bar = tqdm(
			total=self.end_step,
			initial=self.step,
			unit="step",
			disable=not (self.progress and self.env.is_main),
			dynamic_ncols=True,
		)
		started = time.perf_counter()
		first_step = self.step
		last_time, last_tokens = started, self.tokens
		if self.env.is_main:
			tqdm.write(
				f"training on {self.device} ({self.precision}, {self.env.world_size} process(es)), "
				f"{self.tokens_per_step:,} tokens a step, from step {self.step}"
			)
		try:
			while (reason := self._stop_reason(started)) is None:
				out = self.train_step()
				self.step += 1
				self.tokens += self.tokens_per_step
				if out["finite"]:
					self.nonfinite_in_row = 0
					self.smooth_loss.update(out["loss"])
					self.smooth_accuracy.update(out["accuracy"])
				else:
					self.skipped += 1
					self.nonfinite_in_row += 1
					tqdm.write(
						f"step {self.step}: non-finite loss or gradient (loss {out['loss']}, grad norm {out['grad_norm']}), update skipped"
					)
					if self.nonfinite_in_row >= c.max_nonfinite_in_row:
						raise RuntimeError(
							f"{self.nonfinite_in_row} non-finite losses or gradients in a row (step {self.step}); "
							f"the weights were not updated and {self.last_dir} is intact. Lower the learning rate, "
							"check the data, or train in bf16/fp32 rather than fp16"
						)
				if self.step % c.log_every == 0 or not out["finite"]:
					now = time.perf_counter()
					speed = (self.tokens - last_tokens) / max(now - last_time, 1e-9)
					last_time, last_tokens = now, self.tokens
					record = {
						"step": self.step,
						"tokens": self.tokens,
						"epoch": self.tokens / self.epoch_tokens if self.epoch_tokens else None,
						"lr": out["lr"],
						"loss": out["loss"],
						"accuracy": out["accuracy"],
						"loss_smooth": self.smooth_loss.value,
						"accuracy_smooth": self.smooth_accuracy.value,
						"grad_norm": out["grad_norm"],
						"skipped": self.skipped,
						"tokens_per_second": speed,
						"mfu": speed * self.flops_per_token / (self.peak_flops * self.env.world_size)
						if self.peak_flops
						else None,
						"elapsed": self.elapsed + now - started,
					}
					self._log(record)
					bar.set_postfix(
						loss=f"{self.smooth_loss.value:.3f}",
						acc=f"{self.smooth_accuracy.value:.1%}",
						lr=f"{out['lr']:.2e}",
						tok_s=f"{speed:,.0f}",
						refresh=False,
					)
				if c.max_seconds is not None:  # a time budget: the bar ends where the pace says it will
					session = time.perf_counter() - started
					self.end_step = self._end_step(self.elapsed + session, self.step - first_step, session)
					bar.total = self.end_step
				bar.update(1)
				if c.eval_every and self.step % c.eval_every == 0:
					self._validate()
				if c.checkpoint_every and self.step % c.checkpoint_every == 0:
					self.elapsed += time.perf_counter() - started
					started = time.perf_counter()
					self.save()
					if self.env.is_main:
						plot_metrics(self.run_dir)
			if reason == "done" and self._validated_step != self.step:
				self._validate()
			self.elapsed += time.perf_counter() - started
			if self._saved_step != self.step:
				self.save()
		finally:
			bar.close()
			for signum, handler in handlers.items():
				signal.signal(signum, handler)
		if self.env.is_main:
			plot_metrics(self.run_dir)
			why = f"{reason}: {self.stop_detail}" if self.stop_detail else reason
			tqdm.write(f"stopped ({why}) at step {self.step}, {self.tokens:,} tokens; checkpoint in {self.last_dir}")
		return TrainResult(reason, self.step, self.tokens, self.val_loss, self.best_val_loss, self.run_dir)

	def close(self) -> None:
		"""Close the metrics file and the loaders' prefetch threads; release the run directory."""
		if self.metrics is not None:
			self.metrics.close()
		for loader in (self.train_loader, self.val_loader):
			if hasattr(loader, "close"):
				loader.close()
		if self.lock is not None:
			self.lock.release()
