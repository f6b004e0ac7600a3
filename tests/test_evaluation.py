"""`evaluate`: windows, scores against a token-by-token recomputation, bytes, the readers, the dataset split, .pt files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from support import small_config

from dimgpt.cli import main
from dimgpt.config import ModelConfig
from dimgpt.data.corpus import embedded_documents
from dimgpt.data.tokenizer import END_OF_TEXT, START_OF_TEXT, Tokenizer
from dimgpt.errors import ExitCode
from dimgpt.evaluation import dataset_texts, evaluate, plan_windows, read_texts
from dimgpt.model.loading import save_model
from dimgpt.model.transformer import Transformer

FRENCH = [
	"Le château se dressait au sommet de la colline ; ses tours grises dominaient la vallée où coulait la rivière.",
	"« Bonjour, dit-elle, êtes-vous déjà allé à Marseille ? » Il répondit qu'il n'y était jamais allé, hélas.",
]


def train_small_model(tokenizer: Tokenizer, texts: list[str], steps: int = 60, seed: int = 0) -> Transformer:
	"""A small model trained briefly on `texts`, so that its likelihoods are far from uniform."""
	torch.manual_seed(seed)
	model = Transformer(small_config(vocab_size=tokenizer.vocab_size))
	ids = np.concatenate([np.concatenate([[START_OF_TEXT], ids]) for ids in tokenizer.encode_batch(texts)])
	data = torch.from_numpy(ids.astype(np.int64))
	optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
	generator = torch.Generator().manual_seed(seed)
	for _ in range(steps):
		starts = torch.randint(0, len(data) - 33, (16,), generator=generator)
		batch = torch.stack([data[s : s + 33] for s in starts])
		loss = F.cross_entropy(model(batch[:, :-1]).flatten(0, 1), batch[:, 1:].flatten())
		optimizer.zero_grad()
		loss.backward()
		optimizer.step()
	return model.eval()


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tokenizer: Tokenizer) -> tuple[Path, Transformer, Tokenizer]:
	"""A run-like directory (model.safetensors, model.json, vocab.txt) of a briefly trained model."""
	texts = list(embedded_documents())[:40] + FRENCH * 20
	model = train_small_model(tokenizer, texts)
	directory = tmp_path_factory.mktemp("model")
	save_model(model, directory)
	tokenizer.save(directory / "vocab.txt")
	return directory, model, tokenizer


@pytest.mark.parametrize("context,stride", [(16, 16), (16, 8), (16, 5), (16, 1), (7, 3)])
def test_windows_score_every_token_once_with_the_documented_context(context: int, stride: int):
	for length in range(1, 70):
		for first in sorted({f for f in (1, 2, length // 2, length) if 1 <= f <= length}):
			seen: list[int] = []
			for begin, end, scored in plan_windows(length, first, context, stride):
				assert 0 <= begin < end <= length - 1 and end - begin <= context and 1 <= scored <= end - begin
				for token in range(end - scored + 1, end + 1):
					seen.append(token)
					before = token - begin  # tokens the prediction of `token` is conditioned on
					assert before == token or before >= context - stride + 1, (length, first, token, begin)
			assert seen == list(range(first, length)), (length, first)


def token_by_token(model: Transformer, sequence: list[int], context: int, stride: int) -> tuple[float, int]:
	"""NLL and hits of tokens 1.. of `sequence`, one forward per token over the window the module doc gives it."""
	nll, hits = 0.0, 0
	for token in range(1, len(sequence)):
		# windows end at tokens context, context + stride, ... (the last at the end); a token's window is
		# the first that reaches it, and it starts `context` tokens before its end (at 0 for the first)
		end = min(next(e for e in range(context, 10**9, stride) if e >= token), len(sequence) - 1)
		begin = max(0, end - context)
		with torch.no_grad():
			logits = model(torch.tensor([sequence[begin:token]]))[0, -1]
		nll -= float(torch.log_softmax(logits.double(), -1)[sequence[token]])
		hits += int(logits.argmax()) == sequence[token]
	return nll, hits


@pytest.mark.slow  # minutes on a busy 2-core machine
@pytest.mark.parametrize("stride", [None, 5])
def test_scores_equal_a_token_by_token_recomputation(trained, stride):
	_, model, tokenizer = trained
	documents = [" ".join(FRENCH * 2), FRENCH[1][:40], next(iter(embedded_documents()))[:700]]
	result = evaluate(model, documents, tokenizer=tokenizer, stride=stride, batch_size=3, progress=False)
	context = model.config.context_length
	expected_nll, expected_hits, tokens = 0.0, 0, 0
	for document in documents:
		sequence = [START_OF_TEXT, *tokenizer.encode(document)]
		assert len(sequence) > 3 * context or document is not documents[0]  # long documents do get windows
		nll, hits = token_by_token(model, sequence, context, stride or context // 2)
		expected_nll, expected_hits, tokens = expected_nll + nll, expected_hits + hits, tokens + len(sequence) - 1
	score = result.total
	assert score.tokens == tokens
	assert score.nll == pytest.approx(expected_nll, rel=1e-5)
	assert score.correct == expected_hits
	assert 0 < score.accuracy < 1 and score.loss < math.log(tokenizer.vocab_size)  # trained, not uniform


def test_bits_per_byte_and_character_count_the_raw_text(trained):
	directory, _, _ = trained
	documents = ["  " + FRENCH[0] + "\n", FRENCH[1], "   "]  # blank documents are skipped, the others stripped
	score = evaluate(directory, documents, progress=False).total
	kept = [d.strip() for d in documents if d.strip()]
	assert score.documents == 2
	assert score.bytes == sum(len(d.encode("utf-8")) for d in kept) > score.characters == sum(map(len, kept))
	assert score.bits_per_byte == pytest.approx(score.nll / math.log(2) / score.bytes)
	assert score.bits_per_character == pytest.approx(score.nll / math.log(2) / score.characters)
	assert score.perplexity == pytest.approx(math.exp(score.nll / score.tokens))


@pytest.mark.slow  # minutes on a busy 2-core machine
def test_cli_reads_txt_jsonl_and_parquet_and_writes_the_table_and_json(trained, tmp_path, capsys):
	import pandas as pd

	directory, _, _ = trained
	documents = list(embedded_documents())[40:44]
	(tmp_path / "one.txt").write_text(documents[0], encoding="utf-8")
	rows = [{"id": i, "body": d} for i, d in enumerate(documents)]
	(tmp_path / "all.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
	pd.DataFrame(rows).to_parquet(tmp_path / "all.parquet")
	out = tmp_path / "scores.json"
	argv = ["evaluate", "--model", str(directory), "--no-progress", "--json", str(out), "--text-column", "body"]
	assert main([*argv, "--text", str(tmp_path / "all.jsonl"), f"pq={tmp_path / 'all.parquet'}"]) == 0
	printed = capsys.readouterr().out
	assert "bits/byte" in printed and "pq" in printed and "total" in printed
	record = json.loads(out.read_text())
	assert record["sources"]["all"] == record["sources"]["pq"]  # the same rows through two readers
	assert record["sources"]["all"]["documents"] == 4
	direct = evaluate(directory, documents, progress=False).total
	assert record["sources"]["all"]["nll"] == pytest.approx(direct.nll, rel=1e-9)
	assert record["total"]["bits_per_byte"] == pytest.approx(direct.bits_per_byte, rel=1e-9)
	# a .txt file is one document
	assert main(["evaluate", "--model", str(directory), "--no-progress", "--text", str(tmp_path / "one.txt")]) == 0
	texts = read_texts([str(tmp_path / "one.txt")])
	assert [t.strip() for t in texts["one"]] == [documents[0].strip()]


def test_cli_errors_are_one_line(trained, tmp_path, capsys):
	directory, _, _ = trained
	assert main(["evaluate", "--model", str(directory), "--text", str(tmp_path / "missing.txt")]) == ExitCode.NOT_FOUND
	error = capsys.readouterr().err.strip()
	assert "missing.txt" in error and "\n" not in error
	(tmp_path / "a.txt").write_text("Du texte.", encoding="utf-8")
	assert (
		main(["evaluate", "--model", str(tmp_path / "nothing"), "--text", str(tmp_path / "a.txt")])
		== ExitCode.NOT_FOUND
	)
	assert "nothing" in capsys.readouterr().err


def test_dataset_validation_split_is_the_text_create_data_held_out(trained, tmp_path):
	from dimgpt.config import DataConfig, SourceConfig
	from dimgpt.data.create import create_data
	from dimgpt.data.store import read_json

	texts = list(embedded_documents())
	(tmp_path / "docs.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
	config = DataConfig(
		vocab_size=1_600,
		tokenizer_chars=200_000,
		validation_fraction=0.05,
		sources=(SourceConfig("docs", path=str(tmp_path / "docs.jsonl")),),
		instruct_sources=(),
	)
	create_data(config, tmp_path / "data", progress=False)
	tokenizer = Tokenizer.load(tmp_path / "data" / "vocab.txt")
	validation = list(dataset_texts(tmp_path / "data")["docs"])
	shards = sorted((tmp_path / "data" / "pretrain" / "docs").glob("validation_*.bin"))
	stored = np.concatenate([np.fromfile(s, dtype=np.uint16) for s in shards])
	manifest = read_json(tmp_path / "data" / "pretrain" / "docs" / "source.json")
	assert len(validation) == manifest["splits"]["validation"]["documents"] >= 2
	encoded = np.concatenate(
		[np.concatenate([[START_OF_TEXT], ids, [END_OF_TEXT]]) for ids in tokenizer.encode_batch(validation)]
	)
	assert np.array_equal(encoded, stored)  # the same documents, in the same order, as the held-out shards
	assert len(list(dataset_texts(tmp_path / "data", "train")["docs"])) == manifest["splits"]["train"]["documents"]


def test_released_pt_state_dict_is_evaluated_as_the_model_it_holds(tmp_path, tokenizer):
	# head size 64, context 512, window 256: what load_model infers from a bare state_dict
	config = ModelConfig(
		vocab_size=tokenizer.vocab_size, context_length=512, window=256, dim=128, n_layers=2, n_heads=2, n_kv_heads=1
	)
	torch.manual_seed(0)
	model = Transformer(config).eval()
	torch.save(model.state_dict(), tmp_path / "weights.pt")
	tokenizer.save(tmp_path / "vocab.txt")
	from_file = evaluate(tmp_path / "weights.pt", FRENCH, tokenizer=tmp_path / "vocab.txt", progress=False).total
	in_memory = evaluate(model, FRENCH, tokenizer=tokenizer, progress=False).total
	assert from_file.tokens == in_memory.tokens and from_file.nll == pytest.approx(in_memory.nll, rel=1e-6)


MC_ROWS = [
	("Le château se dressait au sommet de la", ["colline", "rivière", "vallée"], 0),
	("ses tours grises dominaient la", ["vallée", "colline", "Seine"], 0),
	("« Bonjour, dit-elle, êtes-vous déjà allé à", ["Marseille", "Paris", "la plage"], 0),
	("Il répondit qu'il n'y était jamais", ["allé", "venu", "resté"], 0),
	("Assignment statements are used to (re)bind names to", ["values", "tours", "colline"], 0),
	("où coulait la", ["rivière", "vallée", "tour"], 0),
	("The assert statement is a convenient way to insert", ["debugging assertions", "la vallée", "names"], 0),
	("Le château se dressait au", ["sommet", "bas", "milieu"], 1),
]


def mc_task(directory: Path) -> Path:
	"""An lm-eval multiple-choice task over a local JSONL, plus a rolling-likelihood task over the same sentences."""
	rows = [{"question": q, "choices": c, "answer": a} for q, c, a in MC_ROWS]
	(directory / "mc.jsonl").write_text(
		"".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
	)
	(directory / "mc.yaml").write_text(
		f"""task: local_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {directory / "mc.jsonl"}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
target_delimiter: " "
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
""",
		encoding="utf-8",
	)
	(directory / "text.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in FRENCH), encoding="utf-8")
	(directory / "rolling.yaml").write_text(
		f"""task: local_rolling
dataset_path: json
dataset_kwargs:
  data_files:
    test: {directory / "text.jsonl"}
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{text}}}}"
metric_list:
  - metric: bits_per_byte
    aggregation: bits_per_byte
    higher_is_better: false
""",
		encoding="utf-8",
	)
	return directory


@pytest.mark.slow
def test_lm_eval_task_accuracy_equals_our_own_likelihoods(trained, tmp_path):
	import os
	import subprocess
	import sys

	directory, model, tokenizer = trained
	mc_task(tmp_path)
	out = tmp_path / "results.json"
	env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
	tasks = f"{tmp_path / 'mc.yaml'},{tmp_path / 'rolling.yaml'}"
	command = [sys.executable, "-m", "dimgpt", "evaluate", "--model", str(directory), "--tasks", tasks]
	run = subprocess.run([*command, "--json", str(out), "--no-progress"], capture_output=True, text=True, env=env)
	assert run.returncode == 0, run.stderr[-3000:]
	assert "local_mc" in run.stdout and "acc" in run.stdout  # lm-eval's results table
	results = json.loads(out.read_text())["results"]

	# Independently: each ending's log-likelihood given "⮜start-of-text⮞ question", by one plain forward.
	hits = hits_norm = 0
	for question, choices, answer in MC_ROWS:
		scores = []
		for choice in choices:
			context = tokenizer.encode(question)
			whole = tokenizer.encode(question + " " + choice)
			assert whole[: len(context)] == context
			sequence = torch.tensor([START_OF_TEXT, *whole])
			with torch.no_grad():
				logprobs = torch.log_softmax(model(sequence[None, :-1])[0].double(), -1)
			positions = range(len(context), len(whole))
			scores.append(sum(float(logprobs[p, sequence[p + 1]]) for p in positions))
		hits += int(np.argmax(scores)) == answer
		hits_norm += int(np.argmax(np.array(scores) / [len(c) for c in choices])) == answer
	assert 0 < hits < len(MC_ROWS) or hits_norm != hits  # the task tells choices apart, not trivially
	assert results["local_mc"]["acc,none"] == pytest.approx(hits / len(MC_ROWS), abs=1e-12)
	assert results["local_mc"]["acc_norm,none"] == pytest.approx(hits_norm / len(MC_ROWS), abs=1e-12)
	# lm-eval's bits per byte of a rolling task is ours on the same text
	ours = evaluate(model, FRENCH, tokenizer=tokenizer, progress=False).total.bits_per_byte
	assert results["local_rolling"]["bits_per_byte,none"] == pytest.approx(ours, rel=1e-6)


@pytest.mark.slow
def test_unknown_lm_eval_task_is_one_line(trained, capsys):
	directory, _, _ = trained
	assert main(["evaluate", "--model", str(directory), "--tasks", "no_such_task_anywhere"]) == ExitCode.USAGE
	error = capsys.readouterr().err.strip()
	assert "no_such_task_anywhere" in error and "lm-eval ls tasks" in error and "\n" not in error
