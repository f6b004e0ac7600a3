"""TensorBoard: every number of metrics.jsonl is a scalar in RUN_DIR/tensorboard/, and a resume purges what it rewrites."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from dimgpt.training.metrics import MetricsLog, read_metrics, tensorboard_tag


def scalars(directory: Path) -> dict[str, dict[int, float]]:
	events = EventAccumulator(str(directory), size_guidance={"scalars": 0})
	events.Reload()
	return {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in events.Tags()["scalars"]}


def test_scalars_are_the_metrics_and_a_resume_purges_the_steps_it_writes_again(tmp_path: Path):
	log = MetricsLog(tmp_path / "metrics.jsonl")
	for step in range(1, 7):
		log.write({"step": step, "loss": 10.0 - step, "lr": 1e-3 * step, "grad_norm": 0.5})
		if step % 3 == 0:
			log.write({"step": step, "val_loss": 9.5 - step, "val_bits_per_byte": 3.0 - 0.1 * step})
		if step == 3:
			log.sync()  # the checkpoint at step 3
	log.close()
	# the run was killed after step 6 and resumes from its checkpoint at step 3, with other values
	log = MetricsLog(tmp_path / "metrics.jsonl", resume_step=3)
	for step in (4, 5):
		log.write({"step": step, "loss": 20.0 + step, "lr": 2e-3, "grad_norm": 0.25})
	log.close()
	board = scalars(tmp_path / "tensorboard")
	expected: dict[str, dict[int, float]] = {}
	for record in read_metrics(tmp_path / "metrics.jsonl"):
		for key, value in record.items():
			if key != "step":
				expected.setdefault(tensorboard_tag(key), {})[record["step"]] = value
	assert set(board) == {"train/loss", "train/lr", "train/grad_norm", "validation/loss", "validation/bits_per_byte"}
	assert board.keys() == expected.keys()
	for tag, values in expected.items():
		assert board[tag].keys() == values.keys(), tag  # steps 6 (and 6's validation) are gone
		for step, value in values.items():
			assert abs(board[tag][step] - value) <= 1e-6 * abs(value), (tag, step)
	assert board["train/loss"] == {1: 9.0, 2: 8.0, 3: 7.0, 4: 24.0, 5: 25.0}


def test_no_tensorboard_directory_when_turned_off(tmp_path: Path):
	log = MetricsLog(tmp_path / "metrics.jsonl", tensorboard=False)
	log.write({"step": 1, "loss": 1.0})
	log.close()
	assert not (tmp_path / "tensorboard").exists()


def test_training_validation_reports_bits_per_byte_of_the_text_tokens(tmp_path: Path):
	from dataclasses import replace

	import torch
	import torch.nn.functional as F

	from dimgpt.data.create import create_data
	from dimgpt.data.tokenizer import NEW_LINE, TAB, UNKNOWN, Tokenizer
	from dimgpt.presets import get_preset
	from dimgpt.training.build import build_trainer

	create_data(
		replace(get_preset("tiny").data, vocab_size=1_600, tokenizer_chars=200_000), tmp_path / "data", progress=False
	)
	overrides = {
		"max_steps": 2,
		"batch_size": 2,
		"eval_every": 2,
		"eval_batches": 2,
		"checkpoint_every": 2,
		"log_every": 1,
	}
	trainer = build_trainer("tiny", tmp_path / "data", tmp_path / "run", progress=False, **overrides)
	try:
		trainer.fit()
		vocab = Tokenizer.load(tmp_path / "data" / "vocab.txt").vocab
		nll = nbytes = 0.0
		with torch.no_grad():
			for x, y, w in trainer.val_batches:
				losses = F.cross_entropy(trainer.model(x).flatten(0, 1), y.flatten(), reduction="none")
				for token, loss, weight in zip(y.flatten().tolist(), losses.tolist(), w.flatten().tolist()):
					size = 1 if token in (TAB, NEW_LINE, UNKNOWN) else len(vocab[token].encode()) if token >= 10 else 0
					if weight > 0 and size > 0:
						nll, nbytes = nll + loss, nbytes + size
	finally:
		trainer.close()
	record = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "val_bits_per_byte" in r][-1]
	assert record["step"] == 2
	assert abs(record["val_bits_per_byte"] - nll / math.log(2) / nbytes) < 1e-4
	assert (tmp_path / "run" / "bits_per_byte.png").is_file()
	assert scalars(tmp_path / "run" / "tensorboard")["validation/bits_per_byte"][2] == pytest.approx(
		record["val_bits_per_byte"], rel=1e-6
	)
