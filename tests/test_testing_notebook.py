"""testing.ipynb runs top to bottom on a tiny checkpoint, and explains what to do when the weights are missing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from nbrun import ROOT, execute_notebook, outputs_text
from support import small_config

from dimgpt.data.tokenizer import Tokenizer
from dimgpt.evaluation import evaluate
from dimgpt.model.loading import load_model, save_model
from dimgpt.model.transformer import Transformer

TEXTS = [
	"Bonjour, je m'appelle Paul et j'habite à Paris depuis dix ans.",
	"Le château de Versailles est une résidence royale construite pour Louis XIV.",
	"Quelle est la capitale de la France ? La capitale de la France est Paris.",
]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, tokenizer: Tokenizer) -> Path:
	"""A run directory as the trainer leaves it: a trained vocabulary and a random-weight checkpoint."""
	run = tmp_path_factory.mktemp("run")
	(run / "data").mkdir()
	tokenizer.save(run / "data" / "vocab.txt")
	torch.manual_seed(0)
	config = small_config(vocab_size=tokenizer.vocab_size, context_length=64)
	save_model(Transformer(config), run / "checkpoints" / "last")
	return run


@pytest.mark.slow
def test_notebook_generates_and_chats(tiny_run: Path):
	notebook = execute_notebook(
		"testing.ipynb",
		{
			"VOCAB_PATH": str(tiny_run / "data" / "vocab.txt"),
			"MODEL_PATH": str(tiny_run),
			"MAX_NEW_TOKENS": 24,
			"SEED": 0,
			"QUESTIONS": ["Bonjour, qui es-tu ?", "Et Paris ?"],
			"EVAL_TEXT": TEXTS[1],
		},
		cwd=ROOT,
	)
	text = outputs_text(notebook)
	model = load_model(tiny_run)
	vocab = Tokenizer.load(tiny_run / "data" / "vocab.txt")
	assert f"Parameters: {model.num_parameters():,}" in text
	assert f"Vocab size: {vocab.vocab_size:,}" in text
	assert "Le château de Versailles" in text
	assert "> Bonjour, qui es-tu ?" in text and "> Et Paris ?" in text
	# the bits-per-byte cell prints what dimgpt.evaluation computes for this model and text
	score = evaluate(model, [TEXTS[1]], tokenizer=vocab, progress=False).total
	assert "bits/byte" in text and f"{score.bits_per_byte:.4f}" in text
	errors = [o for c in notebook.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
	assert not errors


@pytest.mark.slow  # executes the testing notebook
def test_notebook_says_where_the_weights_go(tmp_path: Path):
	notebook = execute_notebook(
		"testing.ipynb",
		{"VOCAB_PATH": str(tmp_path / "vocab.txt"), "MODEL_PATH": str(tmp_path / "DimensionGPT-0.2B-Chat.pt")},
		cwd=ROOT,
	)
	text = outputs_text(notebook)
	assert "Put the released vocab.txt in data/" in text
	assert "Put the released DimensionGPT-0.2B-Chat.pt (chat) or DimensionGPT-0.2B.pt (base) in models/" in text
	assert "Traceback" not in text


def test_committed_notebook_has_no_outputs():
	# The notebook file is JSON: read as such, not through nbformat (2 s of imports and schema validation).
	cells = json.loads((ROOT / "testing.ipynb").read_text(encoding="utf-8"))["cells"]
	code = [c for c in cells if c["cell_type"] == "code"]
	assert all(not c.get("outputs") and c.get("execution_count") is None for c in code)
	assert "parameters" in code[0]["metadata"].get("tags", [])
