"""training.ipynb runs top to bottom on the tiny preset, and a second run resumes the first."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from nbrun import ROOT, execute_notebook, outputs_text

pytestmark = pytest.mark.slow  # executes the training notebook


def test_training_notebook_trains_then_resumes(tmp_path: Path) -> None:
	parameters = {
		"PRESET": "tiny",
		"DATA_DIR": str(tmp_path / "data"),
		"RUN_DIR": str(tmp_path / "run"),
		"TOKENIZER_CHARS": 300_000,
		"MAX_STEPS": 4,
		"OVERRIDES": {"batch_size": 4, "eval_every": 2, "eval_batches": 2, "checkpoint_every": 2, "log_every": 1},
	}
	first = outputs_text(execute_notebook("training.ipynb", parameters, cwd=ROOT))
	assert "precision: fp32" in first
	assert "vocabulary:" in first and "parameters" in first
	assert "step 0, 0 tokens seen" in first
	assert "TrainResult(reason='done', step=4" in first
	assert "validation at step 4" in first
	assert "bits/byte" in first  # the "evaluate this run" cell's table
	run = tmp_path / "run"
	assert torch.load(run / "checkpoints" / "last" / "training.pt", weights_only=True)["step"] == 4
	assert (run / "loss.png").exists() and (run / "accuracy.png").exists() and (run / "vocab.txt").exists()

	second = outputs_text(execute_notebook("training.ipynb", parameters | {"MAX_STEPS": 6}, cwd=ROOT))
	assert "step 4, 2,048 tokens seen" in second
	assert "TrainResult(reason='done', step=6" in second
