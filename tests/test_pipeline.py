"""The main job on the tiny preset, end to end on the embedded corpus, then resumed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dimgpt.data.corpus import embedded_corpus_info, embedded_documents
from dimgpt.data.tokenizer import CONTROL_TOKENS, Tokenizer
from dimgpt.pipeline import run_main_job
from dimgpt.presets import get_preset


def test_embedded_corpus_is_real_text() -> None:
	info = embedded_corpus_info()
	docs = list(embedded_documents())
	assert info["documents"] == len(docs) > 10 and info["characters"] > 100_000 and info["licence"]
	words = " ".join(docs).split()
	assert len(set(words)) > 5_000  # real prose, not a repeated filler


def _steps(run: Path) -> list[int]:
	lines = (run / "metrics.jsonl").read_text().splitlines()
	return [json.loads(line)["step"] for line in lines]


@pytest.mark.slow  # the whole main job, twice
def test_main_job_runs_end_to_end_then_resumes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
	budget = {"pretrain_seconds": 6, "finetune_seconds": 3, "questions": ["Bonjour !"], "progress": False}
	where = run_main_job("tiny", tmp_path, **budget)
	out = capsys.readouterr().out
	for stage in ("1/4 create data", "2/4 pretrain", "3/4 fine-tune", "4/4 chat", "> Bonjour !"):
		assert stage in out
	tokenizer = Tokenizer.load(where["vocabulary"])
	assert tokenizer.vocab_size == get_preset("tiny").data.vocab_size
	assert tuple(tokenizer.vocab[:10]) == CONTROL_TOKENS
	for plot in where["plots"]:
		assert plot.stat().st_size > 1_000, plot
	for run in ("pretrain", "chat"):
		assert (tmp_path / run / "checkpoints" / "last" / "model.safetensors").is_file()
	pretrain_steps = _steps(tmp_path / "pretrain")
	assert pretrain_steps and pretrain_steps[-1] > 0
	finetune_info = json.loads((tmp_path / "chat" / "finetune.json").read_text())
	assert finetune_info["val_loss_after"] < finetune_info["val_loss_before"]

	# Re-running carries on from what is there: same vocabulary, no training restarted from step 0.
	run_main_job("tiny", tmp_path, **budget)
	again = capsys.readouterr().out
	assert Tokenizer.load(where["vocabulary"]).fingerprint == tokenizer.fingerprint
	assert "from step 0" not in again
	assert _steps(tmp_path / "pretrain")[: len(pretrain_steps)] == pretrain_steps
