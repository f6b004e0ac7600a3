"""Muon + AdamW: which weights each gets, exact resume, accumulation, mixed precision, fine-tuning, DDP."""

from __future__ import annotations

import itertools
import math
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from support import QUICK, SMALL, ListLoader, real_batches

from dimgpt.data.loader import PretrainLoader
from dimgpt.model.loading import load_model
from dimgpt.model.transformer import Transformer
from dimgpt.presets import get_preset
from dimgpt.training.metrics import read_metrics
from dimgpt.training.optim import Optimizers, make_optimizer
from dimgpt.training.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
MUON = replace(QUICK, optimizer="muon", schedule="wsd", muon_lr=0.02, muon_weight_decay=0.01, grad_accum=2)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def tiny_data(tiny_dataset: Path) -> Path:
	return tiny_dataset


def test_muon_gets_the_block_matrices_and_adamw_the_rest() -> None:
	model = Transformer(SMALL)
	optimizer = make_optimizer(model, MUON, torch.device("cpu"))
	assert isinstance(optimizer, Optimizers)
	muon, adamw = optimizer.optimizers["muon"], optimizer.optimizers["adamw"]
	assert isinstance(muon, torch.optim.Muon) and isinstance(adamw, torch.optim.AdamW)
	names = {id(p): n for n, p in model.named_parameters()}
	hidden = sorted(names[id(p)].split(".", 2)[2] for g in muon.param_groups for p in g["params"])
	# query/key/value and linear_1/linear_2 are fused matrices: Muon orthogonalises each fused one whole
	per_block = ["attention.projection.weight", "attention.qkv.weight"]
	per_block += ["feed_forward.linear_12.weight", "feed_forward.linear_3.weight"]
	assert hidden == sorted(per_block * SMALL.n_layers)
	rest = [names[id(p)] for g in adamw.param_groups for p in g["params"]]
	assert rest.count("token_embedding.weight") == 1 and "final_linear.weight" not in rest  # tied: one tensor
	assert all(n == "token_embedding.weight" or n.endswith("norm.weight") or "norm_" in n for n in rest)
	total = sum(p.numel() for g in optimizer.param_groups for p in g["params"])
	assert total == SMALL.num_parameters()  # every parameter once, in exactly one optimizer
	assert muon.param_groups[0]["lr"] == MUON.muon_lr and adamw.param_groups[0]["lr"] == MUON.lr
	assert muon.param_groups[0]["ns_steps"] == MUON.muon_ns_steps


def pretrain_trainer(data: Path, run_dir: Path, config, **kwargs) -> Trainer:
	train = PretrainLoader(data, "train", config.batch_size, SMALL.context_length, seed=3)
	return Trainer(SMALL, config, run_dir, train, progress=False, **kwargs)


@pytest.mark.slow  # 12 training steps; the fast lane resumes Muon in test_resume_takes_the_new_rates_...
def test_stop_and_resume_with_muon_gives_the_same_weights(tiny_data: Path, tmp_path: Path) -> None:
	"""6 steps straight vs 3 steps, a new Trainer from the checkpoint, 3 more: bit-identical weights."""
	config = replace(MUON, max_steps=6, warmup_steps=2, decay_steps=6, cooldown_steps=2)
	straight = pretrain_trainer(tiny_data, tmp_path / "straight", config)
	straight.fit()
	straight.close()

	first = pretrain_trainer(tiny_data, tmp_path / "resumed", replace(config, max_steps=3))
	first.fit()
	first.close()
	second = pretrain_trainer(tiny_data, tmp_path / "resumed", config)
	assert second.step == 3
	assert second.optimizer.optimizers["muon"].state  # the momentum buffers came back from the checkpoint
	second.fit()
	second.close()

	torch.manual_seed(config.seed)
	initial = Transformer(SMALL)
	moved = 0
	for (name, a), b, c in zip(
		straight.model.named_parameters(), second.model.parameters(), initial.parameters(), strict=True
	):
		assert torch.equal(a, b), name
		moved += not torch.equal(a, c)
	assert moved == len(list(initial.parameters()))  # every tensor trained: equality is not from frozen weights
	lrs = [r["lr"] for r in read_metrics(tmp_path / "resumed" / "metrics.jsonl") if "lr" in r]
	assert lrs == [r["lr"] for r in read_metrics(tmp_path / "straight" / "metrics.jsonl") if "lr" in r]
	assert lrs[2:4] == [config.lr, config.lr] and lrs[-1] < config.lr  # stable, then the WSD decay


def test_resume_takes_the_new_rates_and_refuses_another_optimizer(tiny_data: Path, tmp_path: Path) -> None:
	config = replace(MUON, max_steps=2)
	trainer = pretrain_trainer(tiny_data, tmp_path, config)
	trainer.fit()
	trainer.close()
	faster = replace(config, max_steps=3, muon_lr=0.05, muon_weight_decay=0.0, muon_ns_steps=config.muon_ns_steps + 1)
	trainer = pretrain_trainer(tiny_data, tmp_path, faster)
	muon = trainer.optimizer.optimizers["muon"].param_groups[0]
	# the config's values, not the checkpoint's
	assert (muon["base_lr"], muon["weight_decay"], muon["ns_steps"]) == (0.05, 0.0, faster.muon_ns_steps)
	trainer.close()
	with pytest.raises(ValueError, match=r"optimizer=.muon..*--set optimizer=muon"):
		pretrain_trainer(tiny_data, tmp_path, replace(faster, optimizer="adamw"))


def test_accumulation_with_muon_equals_one_big_batch(tiny_data: Path, tmp_path: Path) -> None:
	"""Muon sees the gradient of the whole batch once a step (its momentum), not one per micro-batch."""
	big = real_batches(tiny_data, 1, 8)
	halves = [(x[s], y[s], w[s]) for x, y, w in big for s in (slice(0, 4), slice(4, 8))]
	config = replace(MUON, max_steps=1, grad_clip=0.0)
	trainers = []
	for name, batch_size, batches in (("one", 8, big), ("two", 4, halves)):
		trainer = Trainer(
			SMALL,
			replace(config, batch_size=batch_size, grad_accum=len(batches)),
			tmp_path / name,
			ListLoader(batches),
			progress=False,
		)
		start = {n: p.clone() for n, p in trainer.model.named_parameters()}
		trainer.fit()
		trainers.append((trainer, start))
	(one, start), (two, _) = trainers
	muon_one, muon_two = (t.optimizer.optimizers["muon"] for t in (one, two))
	for (name, p), q in zip(one.model.named_parameters(), two.model.parameters()):
		if p in muon_one.state:
			# the momentum buffer is (1 - momentum) × the step's gradient, in float32
			buffers = muon_one.state[p]["momentum_buffer"], muon_two.state[q]["momentum_buffer"]
			torch.testing.assert_close(*buffers, rtol=1e-4, atol=1e-8, msg=name)
		# Newton-Schulz runs in bfloat16: a last-bit difference in the gradient moves the update a little.
		update_one, update_two = p - start[name], q - start[name]
		assert (update_one - update_two).norm() < 0.02 * update_one.norm(), name


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_muon_under_mixed_precision_and_clipping(tiny_data: Path, tmp_path: Path, precision: str) -> None:
	loader = ListLoader(real_batches(tiny_data, 4, 4))
	config = replace(MUON, max_steps=4, precision=precision, grad_clip=0.5)
	trainer = Trainer(SMALL, config, tmp_path, loader, progress=False)
	before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
	trainer.fit()
	assert trainer.skipped == 0 and trainer.scaler.is_enabled() == (precision == "fp16")
	for name, value in trainer.model.state_dict().items():
		assert value.dtype == torch.float32 and torch.isfinite(value).all(), name
		assert not torch.equal(value, before[name]), name
	records = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "loss" in r]
	assert records[-1]["loss"] < records[0]["loss"]


@pytest.mark.slow  # trains twice; the fast lane has Muon training here and fine-tuning in test_finetune
def test_fine_tuning_a_checkpoint_with_muon(tiny_data: Path, tmp_path: Path) -> None:
	"""A model pretrained with AdamW is fine-tuned with Muon from its weights (a fresh optimizer)."""
	pretrained = pretrain_trainer(tiny_data, tmp_path / "base", replace(QUICK, max_steps=2))
	pretrained.fit()
	pretrained.close()
	weights = {k: v.clone() for k, v in pretrained.model.state_dict().items()}
	tuned = pretrain_trainer(
		tiny_data, tmp_path / "tuned", replace(MUON, max_steps=2), init_from=tmp_path / "base" / "checkpoints" / "last"
	)
	assert all(torch.equal(v, weights[k]) for k, v in tuned.model.state_dict().items())
	tuned.fit()
	tuned.close()
	assert tuned.step == 2 and not torch.equal(
		tuned.model.state_dict()["blocks.0.attention.query.weight"], weights["blocks.0.attention.query.weight"]
	)


@pytest.mark.slow
def test_muon_under_two_gloo_processes_matches_one_process(tiny_data: Path, tmp_path: Path) -> None:
	class Interleaved:
		"""One process standing in for two ranks: micro-batch i comes from rank i % 2's loader."""

		def __init__(self, loaders: list[PretrainLoader]) -> None:
			self.loaders, self.count = loaders, 0

		def next_batch(self):
			batch = self.loaders[self.count % 2].next_batch()
			self.count += 1
			return batch

		def state_dict(self) -> dict:
			return {"count": self.count}

		def load_state_dict(self, state: dict) -> None:
			self.count = state["count"]

	from dimgpt.training.build import train

	settings = {"batch_size": 2, "grad_accum": 2, "log_every": 1, "eval_every": 0, "checkpoint_every": 0}
	settings |= {"optimizer": "muon", "schedule": "wsd", "muon_lr": 0.02}

	def make_loader(split: str, env) -> Interleaved:
		return Interleaved([PretrainLoader(tiny_data, split, 2, 128, rank=r, world_size=2) for r in (0, 1)])

	train(
		"tiny",
		tiny_data,
		tmp_path / "one",
		make_loader=make_loader,
		progress=False,
		max_steps=3,
		eval_batches=0,
		**settings,
	)
	args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
	args += ["-m", "dimgpt", "train", "--preset", "tiny", "--data", str(tiny_data), "--run-dir", str(tmp_path / "ddp")]
	args += ["--max-steps", "3", "--no-progress", "--set", "eval_batches=0"]
	args += [arg for k, v in settings.items() for arg in ("--set", f"{k}={v}")]
	env = os.environ | {"OMP_NUM_THREADS": "1"}
	result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
	assert result.returncode == 0, result.stdout + result.stderr
	one, two = read_metrics(tmp_path / "one" / "metrics.jsonl"), read_metrics(tmp_path / "ddp" / "metrics.jsonl")
	assert [r["step"] for r in one] == [r["step"] for r in two] == [1, 2, 3]
	for a, b in zip(one, two):
		assert b["loss"] == pytest.approx(a["loss"], rel=1e-4), a["step"]
	assert len({r["loss"] for r in one}) == 3


@pytest.mark.slow  # 4 s of training; the fast lane has the time budget (test_trainer) and the WSD decay
def test_a_time_budget_decays_a_wsd_run_over_its_last_fifth(tiny_data: Path, tmp_path: Path) -> None:
	"""With max_seconds, WSD cannot know its last step: the decay starts at 80 % of the time and ends the run."""
	config = replace(MUON, grad_accum=1, max_steps=100_000, decay_steps=100_000, warmup_steps=1, max_seconds=4.0)
	trainer = pretrain_trainer(tiny_data, tmp_path, config)
	result = trainer.fit()
	trainer.close()
	first = trainer.decay_from
	assert result.reason == "done" and first is not None and first >= 1
	assert result.step == first + math.ceil(first / 4)  # a quarter of the steps done: a fifth of the run
	lrs = [r["lr"] for r in read_metrics(tmp_path / "metrics.jsonl") if "lr" in r]
	assert len(lrs) == result.step and lrs[: first + 1] == [config.lr] * (first + 1)  # step `first` starts it
	assert all(a > b for a, b in itertools.pairwise(lrs[first:]))
	assert lrs[-1] == pytest.approx(config.min_lr + (config.lr - config.min_lr) / math.ceil(first / 4))
	saved = torch.load(tmp_path / "checkpoints" / "last" / "training.pt", weights_only=True)
	assert saved["decay_from"] == first and saved["step"] == result.step


def test_decay_turns_a_stable_checkpoint_into_a_final_model(tiny_data: Path, tmp_path: Path) -> None:
	from dimgpt.errors import UsageError
	from dimgpt.training.build import decay, train

	stable = tmp_path / "stable"
	quick = {"batch_size": 2, "eval_batches": 0, "eval_every": 0, "checkpoint_every": 0, "log_every": 1}
	recipe = {"optimizer": "muon", "schedule": "wsd", "warmup_steps": 1, "decay_steps": 1_000, "cooldown_steps": 0}
	train("tiny", tiny_data, stable, progress=False, max_steps=4, max_seconds=None, **quick, **recipe)
	result = decay(stable, tiny_data, steps=2, progress=False)
	assert result.run_dir == tmp_path / "stable-decayed-4" and result.step == 6 and result.reason == "done"
	lrs = [r["lr"] for r in read_metrics(result.run_dir / "metrics.jsonl") if "lr" in r]
	peak, low = get_preset("tiny").train.lr, get_preset("tiny").train.min_lr
	assert lrs == pytest.approx([peak] * 5 + [(peak + low) / 2])  # the stable run's 4, then the decay's 2
	assert torch.load(stable / "checkpoints" / "last" / "training.pt", weights_only=True)["step"] == 4  # untouched
	assert not torch.equal(
		load_model(stable / "checkpoints" / "last").token_embedding.weight,
		load_model(result.run_dir / "checkpoints" / "last").token_embedding.weight,
	)

	cosine = tmp_path / "cosine"
	train("tiny", tiny_data, cosine, progress=False, max_steps=1, max_seconds=None, **quick, schedule="cosine")
	with pytest.raises(UsageError, match="follows the cosine schedule"):
		decay(cosine, tiny_data, steps=2, progress=False)
