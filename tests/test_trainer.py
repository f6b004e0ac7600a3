"""Trainer: optimizer groups, accumulation equivalence, non-finite skip, budgets, STOP file, metrics and plots."""

from __future__ import annotations

import math
import os
import signal
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from support import QUICK, SMALL, ListLoader, real_batches

from dimgpt.data.loader import PretrainLoader
from dimgpt.model.loading import read_model_config
from dimgpt.model.transformer import Transformer
from dimgpt.training.metrics import read_metrics
from dimgpt.training.optim import make_optimizer
from dimgpt.training.trainer import Trainer, resolve_precision

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_data(tiny_dataset: Path) -> Path:
	return tiny_dataset


def losses(run_dir: Path) -> list[float]:
	return [r["loss"] for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r]


def test_weight_decay_on_matrices_only_and_tied_embedding_once() -> None:
	model = Transformer(SMALL)
	optimizer = make_optimizer(model, QUICK, torch.device("cpu"))
	decay, no_decay = optimizer.param_groups
	assert decay["weight_decay"] == QUICK.weight_decay and no_decay["weight_decay"] == 0.0
	assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() == 1 for p in no_decay["params"])
	embedding = model.token_embedding.weight
	assert model.final_linear.weight is embedding
	assert sum(p is embedding for p in decay["params"]) == 1
	total = sum(p.numel() for g in optimizer.param_groups for p in g["params"])
	assert total == SMALL.num_parameters()
	assert len(no_decay["params"]) == 2 * SMALL.n_layers + 1  # two RMSNorm gains a block, and the final one


def test_precision_auto_is_fp32_on_cpu() -> None:
	assert resolve_precision("auto", torch.device("cpu")) == "fp32"
	assert resolve_precision("bf16", torch.device("cpu")) == "bf16"


def test_accumulation_equals_one_big_batch(tiny_data: Path, tmp_path: Path) -> None:
	big = []
	for i, (x, y, w) in enumerate(real_batches(tiny_data, 2, 8)):
		w = w.clone()
		w[:4, : 20 + i] = 0.0  # the first half of the batch is mostly padding: its micro-batch mean weighs less
		big.append((x, y, w))
	halves = [(x[s], y[s], w[s]) for x, y, w in big for s in (slice(0, 4), slice(4, 8))]
	config = replace(QUICK, max_steps=2)
	one = Trainer(SMALL, replace(config, batch_size=8, grad_accum=1), tmp_path / "one", ListLoader(big), progress=False)
	one.fit()
	two = Trainer(
		SMALL, replace(config, batch_size=4, grad_accum=2), tmp_path / "two", ListLoader(halves), progress=False
	)
	two.fit()
	for (name, a), b in zip(one.model.named_parameters(), two.model.parameters()):
		torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
	assert losses(tmp_path / "one") == pytest.approx(losses(tmp_path / "two"), rel=1e-6)

	# The test can fail: averaging the two micro-batch means gives another loss than the big batch.
	torch.manual_seed(QUICK.seed)
	model = Transformer(SMALL)
	with torch.no_grad():
		sums = [one._forward(model, x, y, w)[0].item() for x, y, w in halves[:2]]
	weights = [w.sum().item() for _, _, w in halves[:2]]
	big_loss = sum(sums) / sum(weights)
	mean_of_means = (sums[0] / weights[0] + sums[1] / weights[1]) / 2
	assert losses(tmp_path / "two")[0] == pytest.approx(big_loss, rel=1e-5)
	assert abs(mean_of_means - big_loss) > 1e-3


def test_non_finite_step_is_skipped_and_never_reaches_the_weights(tiny_data: Path, tmp_path: Path) -> None:
	batches = real_batches(tiny_data, 4, 4)
	x, y, w = batches[2]
	w = w.clone()
	w[0, 0] = math.nan
	batches[2] = (x, y, w)
	trainer = Trainer(SMALL, replace(QUICK, max_steps=2), tmp_path, ListLoader(batches), progress=False)
	trainer.fit()
	before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
	moments = [s["exp_avg"].clone() for s in trainer.optimizer.state.values()]
	trainer.config = replace(QUICK, max_steps=3)
	trainer.fit()
	assert trainer.skipped == 1
	for k, v in trainer.model.state_dict().items():
		assert torch.equal(v, before[k]), k
	assert all(torch.equal(m, s["exp_avg"]) for m, s in zip(moments, trainer.optimizer.state.values()))
	assert all(p.grad is None for p in trainer.model.parameters())
	last = read_metrics(tmp_path / "metrics.jsonl")[-1]
	assert last["step"] == 3 and last["skipped"] == 1 and math.isnan(last["loss"])
	trainer.config = replace(QUICK, max_steps=4)
	trainer.fit()  # the next good batch trains again
	assert trainer.skipped == 1 and not torch.equal(
		trainer.model.token_embedding.weight, before["token_embedding.weight"]
	)
	trainer.close()


def test_a_time_budget_drives_the_progress_bar_and_the_stop_message(
	tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
	# 100,000 steps allowed but 3 seconds: the bar counts to where the 3 seconds end, not to 100,000
	config = replace(QUICK, max_steps=100_000, max_seconds=3.0)
	trainer = Trainer(SMALL, config, tmp_path, ListLoader(real_batches(tiny_data, 4, 4)), progress=True)
	result = trainer.fit()
	trainer.close()
	out, err = capsys.readouterr()
	assert result.reason == "done" and 0 < result.step < 100_000
	assert abs(trainer.end_step - result.step) <= max(3, result.step // 5)
	assert f"stopped (done: time budget of 3 s) at step {result.step}" in out
	assert "100000" not in err.split("\r")[-1] and f"{result.step}/{trainer.end_step}" in err


def test_early_stopping_keeps_the_best_checkpoint_and_survives_a_resume(
	tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
	# lr 0: the weights never change, so no validation after the first beats it
	config = replace(QUICK, lr=0.0, min_lr=0.0, max_steps=50, eval_every=1, eval_batches=1, patience=3)
	batches = real_batches(tiny_data, 4, 4)
	trainer = Trainer(
		SMALL, replace(config, max_steps=2), tmp_path, ListLoader(batches), ListLoader(batches[:1]), progress=False
	)
	assert trainer.fit().reason == "done" and trainer.evals_since_best == 1
	trainer.close()
	trainer = Trainer(SMALL, config, tmp_path, ListLoader(batches), ListLoader(batches[:1]), progress=False)
	result = trainer.fit()  # resumed: the count goes on from 1
	trainer.close()
	assert result.reason == "early-stop" and result.step == 4
	best = torch.load(tmp_path / "checkpoints" / "best" / "training.pt", weights_only=True)
	assert best["step"] == 1 and best["best_val_loss"] == result.best_val_loss
	assert (
		f"stopped (early-stop: no better validation loss in 3 validations; the best, {result.best_val_loss:.3f}"
		in capsys.readouterr().out
	)


def test_many_non_finite_steps_in_a_row_stop_the_run(tiny_data: Path, tmp_path: Path) -> None:
	x, y, w = real_batches(tiny_data, 1, 4)[0]
	poisoned = ListLoader([(x, y, torch.full_like(w, math.inf))])
	trainer = Trainer(SMALL, replace(QUICK, max_steps=10, max_nonfinite_in_row=3), tmp_path, poisoned, progress=False)
	with pytest.raises(RuntimeError, match="3 non-finite losses or gradients in a row"):
		trainer.fit()
	assert trainer.step == 3 and trainer.skipped == 3


def test_token_budget_metrics_plots_and_best_checkpoint(tiny_data: Path, tmp_path: Path) -> None:
	train = PretrainLoader(tiny_data, "train", 4, SMALL.context_length)
	val = PretrainLoader(tiny_data, "validation", 4, SMALL.context_length)
	config = replace(QUICK, max_steps=None, max_tokens=6 * 4 * 32, eval_every=3, eval_batches=2, checkpoint_every=3)
	trainer = Trainer(SMALL, config, tmp_path, train, val, progress=False, epoch_tokens=10_000)
	result = trainer.fit()
	trainer.close()
	train.close()
	val.close()
	assert result.reason == "done" and result.step == 6 and result.tokens == 6 * 4 * 32
	records = read_metrics(tmp_path / "metrics.jsonl")
	steps = [r for r in records if "loss" in r]
	assert [r["step"] for r in steps] == [1, 2, 3, 4, 5, 6]
	assert steps[-1]["epoch"] == pytest.approx(6 * 4 * 32 / 10_000)
	assert steps[0]["lr"] == pytest.approx(QUICK.lr / QUICK.warmup_steps)
	assert {"loss_smooth", "accuracy", "accuracy_smooth", "tokens_per_second", "grad_norm", "mfu"} <= set(steps[-1])
	assert all(0 <= r["accuracy"] <= 1 for r in steps)
	vals = [r for r in records if "val_loss" in r]
	assert [r["step"] for r in vals] == [3, 6]
	assert result.best_val_loss == min(r["val_loss"] for r in vals)
	best = torch.load(tmp_path / "checkpoints" / "best" / "training.pt", weights_only=True)
	assert best["best_val_loss"] == result.best_val_loss
	for name in ("loss.png", "accuracy.png"):
		assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_validation_with_nothing_to_score_reports_no_loss_and_keeps_no_best(tiny_data: Path, tmp_path: Path) -> None:
	batches = real_batches(tiny_data, 2, 4)
	unscored = [(x, y, torch.zeros_like(w)) for x, y, w in batches]  # e.g. no answer token in the batch
	config = replace(QUICK, max_steps=2, eval_every=1, eval_batches=2)
	trainer = Trainer(SMALL, config, tmp_path, ListLoader(batches), ListLoader(unscored), progress=False)
	result = trainer.fit()
	trainer.close()
	vals = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "val_loss" in r]
	assert len(vals) == 2 and all(math.isnan(r["val_loss"]) and math.isnan(r["val_accuracy"]) for r in vals)
	assert result.best_val_loss is None and not (tmp_path / "checkpoints" / "best").exists()

	# The same batches with their weights give a finite loss, and a best checkpoint.
	trainer = Trainer(SMALL, config, tmp_path / "scored", ListLoader(batches), ListLoader(batches), progress=False)
	result = trainer.fit()
	trainer.close()
	assert math.isfinite(result.best_val_loss) and (tmp_path / "scored" / "checkpoints" / "best").exists()


def test_stop_file_saves_and_stops(tiny_data: Path, tmp_path: Path) -> None:
	loader = ListLoader(real_batches(tiny_data, 3, 4))
	trainer = Trainer(SMALL, replace(QUICK, max_steps=2), tmp_path, loader, progress=False)
	trainer.fit()
	(tmp_path / "STOP").touch()
	trainer.config = replace(QUICK, max_steps=50)
	result = trainer.fit()
	assert result.reason == "stop-file" and result.step == 2
	assert not (tmp_path / "STOP").exists()
	state = torch.load(tmp_path / "checkpoints" / "last" / "training.pt", weights_only=True)
	assert state["step"] == 2 and state["loaders"] == [{"position": 2}]
	assert read_model_config(tmp_path / "checkpoints" / "last") == SMALL  # from the weights file's header


class InterruptingLoader(ListLoader):
	"""Sends this process a SIGINT (a Ctrl-C, the notebook's stop button) while batch `at` is drawn."""

	def __init__(self, batches: list, at: int) -> None:
		super().__init__(batches)
		self.at = at

	def next_batch(self):
		if self.position == self.at:
			os.kill(os.getpid(), signal.SIGINT)
		return super().next_batch()


def test_ctrl_c_finishes_the_step_saves_and_returns(tiny_data: Path, tmp_path: Path) -> None:
	loader = InterruptingLoader(real_batches(tiny_data, 2, 4), at=2)
	trainer = Trainer(SMALL, replace(QUICK, max_steps=10), tmp_path, loader, progress=False)
	result = trainer.fit()
	assert result.reason == "interrupted" and result.step == 3
	assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored
	state = torch.load(tmp_path / "checkpoints" / "last" / "training.pt", weights_only=True)
	assert state["step"] == 3 and state["loaders"] == [{"position": 3}]
	loader.at = -1
	assert trainer.fit().reason == "done" and trainer.step == 10  # the same trainer carries on


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_on_cpu_trains(tiny_data: Path, tmp_path: Path, precision: str) -> None:
	loader = ListLoader(real_batches(tiny_data, 3, 4))
	trainer = Trainer(SMALL, replace(QUICK, max_steps=3, precision=precision), tmp_path, loader, progress=False)
	trainer.fit()
	assert trainer.precision == precision and trainer.scaler.is_enabled() == (precision == "fp16")
	assert trainer.model.token_embedding.weight.dtype == torch.float32  # master weights stay fp32
	assert all(math.isfinite(x) for x in losses(tmp_path))
