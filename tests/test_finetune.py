"""Fine-tuning: exact resume, the pretrained run left untouched, the chat model stopping at its end of answer."""

from __future__ import annotations

import hashlib
import io
import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from support import small_config

from dimgpt.cli import main
from dimgpt.config import InstructMix, MixGroup, ModelConfig, TrainConfig, save_json
from dimgpt.data.instruct import build_instruct_source
from dimgpt.data.mix import RESOURCES
from dimgpt.data.store import write_json
from dimgpt.data.tokenizer import END_OF_TEXT, PADDING, USER, Tokenizer
from dimgpt.model.loading import load_model, save_model
from dimgpt.model.transformer import Transformer
from dimgpt.presets import get_preset, load_preprompts
from dimgpt.runs import checkpoint, saved_recipe
from dimgpt.sampling import ChatSession, Sampler, SamplingConfig
from dimgpt.training.build import build_trainer, resolve_recipe
from dimgpt.training.finetune import build_finetuner, finetune
from dimgpt.training.schedule import learning_rate

EXCHANGES = [
	("Bonjour !", "Bonjour ! Comment puis-je vous aider ?"),
	("Qui es-tu ?", "Je suis DimensionGPT."),
	("Quelle est la capitale de la France ?", "Paris."),
	("Merci beaucoup !", "Avec plaisir, au revoir !"),
]


def records(pairs: list[tuple[str, str]]) -> list[dict]:
	return [{"conversation": [{"role": "user", "text": q}, {"role": "assistant", "text": a}]} for q, a in pairs]


def make_dataset(directory: Path, conversations: list[dict], held: float) -> Path:
	"""A dataset folder with a small tokenizer and one instruction source (group "chatbot")."""
	lines = (RESOURCES / "default.jsonl").read_text(encoding="utf-8").splitlines()
	texts = [t["text"] for line in lines for t in json.loads(line)["conversation"]]
	# The preprompts too: the validation one must leave room for the answers in the 96-token window.
	extra = [*load_preprompts(), *(t["text"] for c in conversations for t in c["conversation"])]
	tokenizer = Tokenizer.train(texts + extra, 2_000, progress=False)
	tokenizer.save(directory / "vocab.txt")
	manifest = build_instruct_source(
		directory / "instruct" / "chat",
		conversations,
		tokenizer,
		meta={"multiplier": 1.0, "tokenizer_fingerprint": tokenizer.fingerprint},
		group="chatbot",
		validation_fraction=held,
		min_validation=1 if held else 0,
	)
	write_json(directory / "data.json", {"instruct": {"chat": manifest}})
	return directory


def make_pretrained(run_dir: Path, context_length: int = 96) -> Path:
	"""A stand-in pretraining run: random weights in RUN_DIR/checkpoints/last."""
	config = small_config(vocab_size=2_000, context_length=context_length, window=32, dim=48)
	torch.manual_seed(0)
	save_model(Transformer(config), run_dir / "checkpoints" / "last")
	return run_dir


def tree_digest(directory: Path) -> dict[str, str]:
	return {
		str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
		for p in sorted(directory.rglob("*"))
		if p.is_file()
	}


RECIPE = TrainConfig(
	batch_size=4,
	grad_accum=2,
	lr=2e-3,
	min_lr=2e-4,
	warmup_steps=2,
	decay_steps=8,
	max_steps=8,
	eval_every=4,
	eval_batches=2,
	checkpoint_every=3,
	log_every=1,
)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
	lines = (RESOURCES / "default.jsonl").read_text(encoding="utf-8").splitlines()
	conversations = [json.loads(line) for line in lines[:60]]
	return make_dataset(tmp_path_factory.mktemp("ft-data"), conversations, held=0.1)


@pytest.mark.slow  # trains
def test_interrupted_and_resumed_equals_uninterrupted(tmp_path, dataset):
	pretrained = make_pretrained(tmp_path / "pretrain")
	before = tree_digest(pretrained)
	preset = replace(get_preset("tiny"), finetune=RECIPE)

	whole = finetune(pretrained, dataset, tmp_path / "whole", preset=preset, progress=False)
	finetune(pretrained, dataset, tmp_path / "split", preset=preset, progress=False, max_steps=5)  # stopped at 5
	resumed = finetune(pretrained, dataset, tmp_path / "split", preset=preset, progress=False)
	assert whole.step == resumed.step == 8

	a = load_file(tmp_path / "whole" / "checkpoints" / "last" / "model.safetensors")
	b = load_file(tmp_path / "split" / "checkpoints" / "last" / "model.safetensors")
	assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
	start = load_file(pretrained / "checkpoints" / "last" / "model.safetensors")
	assert not torch.equal(a["token_embedding.weight"], start["token_embedding.weight"])  # it did train
	# ... all but the padding row, kept as it was (the release's padding_idx), through the resume too
	assert torch.equal(a["token_embedding.weight"][PADDING], start["token_embedding.weight"][PADDING])
	assert not torch.equal(a["token_embedding.weight"][PADDING + 1], start["token_embedding.weight"][PADDING + 1])
	assert whole.val_loss == resumed.val_loss

	def losses(run: str) -> dict[int, float]:
		lines = (tmp_path / run / "metrics.jsonl").read_text().splitlines()
		return {r["step"]: r["loss"] for r in map(json.loads, lines) if "loss" in r}

	assert losses("whole") == losses("split")
	assert tree_digest(pretrained) == before  # the pretrained run was only read
	info = json.loads((tmp_path / "whole" / "finetune.json").read_text())
	assert info["val_loss_before"] > info["val_loss_after"] > 0
	# the loss before fine-tuning is the first validation point of the run's plot (step 0, tokens 0)
	first = next(json.loads(line) for line in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines())
	assert first["step"] == first["tokens"] == 0 and first["val_loss"] == info["val_loss_before"]


def test_finetuning_released_weights_keeps_their_padding_row(tmp_path, dataset):
	# A raw state_dict .pt, as released (heads of 64, context 512, window 256: what loading infers), fine-tuned
	# from directly: its padding row (id 1) comes out as it went in.
	torch.manual_seed(0)
	config = ModelConfig(vocab_size=2_000, context_length=512, window=256, dim=64, n_layers=1, n_heads=1, n_kv_heads=1)
	released = {k: v.clone() for k, v in Transformer(config).state_dict().items()}
	torch.save(released, tmp_path / "DimensionGPT-0.2B.pt")
	preset = replace(get_preset("tiny"), finetune=replace(RECIPE, max_steps=3, eval_every=0, checkpoint_every=0))
	finetune(tmp_path / "DimensionGPT-0.2B.pt", dataset, tmp_path / "chat", preset=preset, progress=False)
	tuned = load_file(tmp_path / "chat" / "checkpoints" / "last" / "model.safetensors")["token_embedding.weight"]
	assert torch.equal(tuned[PADDING], released["token_embedding.weight"][PADDING])
	assert not torch.equal(tuned, released["token_embedding.weight"])


def test_refuses_to_write_into_the_pretrained_run(tmp_path, dataset):
	pretrained = make_pretrained(tmp_path / "pretrain")
	for inside in (pretrained, pretrained / "chat", tmp_path):
		with pytest.raises(ValueError, match="own --run-dir"):
			finetune(pretrained, dataset, inside, progress=False, max_steps=1)
	with pytest.raises(FileNotFoundError, match="no model at"):
		finetune(tmp_path / "nothing", dataset, tmp_path / "chat", progress=False)
	assert checkpoint(pretrained) == pretrained / "checkpoints" / "last"


@pytest.mark.slow  # trains
def test_chat_model_stops_at_its_end_of_answer(tmp_path, monkeypatch, capsys):
	# a model fine-tuned briefly on four exchanges answers them and then emits its closing token
	(tmp_path / "data").mkdir()
	dataset = make_dataset(tmp_path / "data", records(EXCHANGES), held=0.0)
	pretrained = make_pretrained(tmp_path / "pretrain")
	recipe = replace(RECIPE, batch_size=8, grad_accum=1, lr=3e-3, warmup_steps=10, decay_steps=200, max_steps=200)
	recipe = replace(recipe, eval_batches=0, eval_every=0, checkpoint_every=0)
	mix = InstructMix(groups=(MixGroup("chatbot", 1.0),), preprompt_ratio=0.0, validation_preprompt=None)
	preset = replace(get_preset("tiny"), finetune=recipe)
	finetune(pretrained, dataset, tmp_path / "chat", preset=preset, mix=mix, progress=False)

	tokenizer = Tokenizer.load(dataset / "vocab.txt")
	sampler = Sampler(load_model(tmp_path / "chat" / "checkpoints" / "last"), tokenizer)
	settings = SamplingConfig(temperature=0.0, max_new_tokens=30)
	session = ChatSession(sampler, settings=settings)
	for question, answer in EXCHANGES[:3]:
		# what stops it is the closing token, not the length limit
		steps = list(sampler.steps([session.prompt_ids(question)], settings, stop_ids=(USER, END_OF_TEXT)))
		assert bool(steps[-1].stopped[0]) and len(steps) < settings.max_new_tokens
		assert steps[-1].tokens[0].item() in (USER, END_OF_TEXT)
		assert session.ask(question) == answer  # a multi-turn session: the earlier exchanges are in the prompt

	# the same through `python -m dimgpt chat` on the run directory
	monkeypatch.setattr("sys.stdin", io.StringIO("Bonjour !\nMerci beaucoup !\n/quit\n"))
	assert main(["chat", "--model", str(tmp_path / "chat"), "--temperature", "0", "--max-new-tokens", "30"]) == 0
	out = capsys.readouterr().out
	assert f"> {EXCHANGES[0][1]}\n" in out and f"> {EXCHANGES[3][1]}\n" in out


def test_finetune_command(tmp_path, dataset, capsys):
	pretrained = make_pretrained(tmp_path / "pretrain", context_length=get_preset("tiny").model.context_length)
	out = tmp_path / "chat"
	args = ["finetune", "--from", str(pretrained), "--data", str(dataset), "--run-dir", str(out), "--no-progress"]
	args += ["--preset", "tiny"]  # weights saved alone, of no preset's shape: the recipe must be named
	args += ["--max-steps", "2", "--set", "batch_size=2", "--set", "eval_every=2", "--preprompt-ratio", "1.0"]
	assert main(args) == 0
	printed = capsys.readouterr().out
	assert re.search(r"fine-tuned to step 2: validation loss \d+\.\d{3}, best \d+\.\d{3}\n", printed), printed
	assert (out / "checkpoints" / "last" / "model.safetensors").is_file() and (out / "metrics.jsonl").is_file()


@pytest.mark.slow  # trains
def test_training_notebook_fine_tuning_section(tmp_path):
	from nbrun import ROOT, execute_notebook, outputs_text

	run = tmp_path / "run"
	parameters = {
		"DATA_DIR": str(tmp_path / "data"),
		"RUN_DIR": str(run),
		"TOKENIZER_CHARS": 300_000,
		"MAX_STEPS": 3,
		"OVERRIDES": {"batch_size": 4, "eval_every": 3, "eval_batches": 1, "checkpoint_every": 3, "log_every": 1},
		"FINETUNE_MAX_STEPS": 4,
		"FINETUNE_OVERRIDES": {
			"batch_size": 4,
			"eval_every": 2,
			"eval_batches": 2,
			"checkpoint_every": 2,
			"log_every": 1,
		},
	}
	text = outputs_text(execute_notebook("training.ipynb", parameters, cwd=ROOT))
	assert "groups: human 9.9%, chatbot 90.0%, identity 0.1%" in text
	assert "⮜user⮞" in text and "⮜assistant⮞" in text  # a decoded instruction batch
	assert f"fine-tuning run {run}-chat: step 0" in text
	assert "TrainResult(reason='done', step=4" in text
	assert "validation loss on answers:" in text and "assistant:" in text
	info = json.loads((tmp_path / "run-chat" / "finetune.json").read_text())
	assert info["step"] == 4 and Path(info["from"]) == (run / "checkpoints" / "best").resolve()
	assert (tmp_path / "run-chat" / "loss.png").is_file() and (tmp_path / "run-chat" / "vocab.txt").is_file()


@pytest.mark.slow  # trains
def test_train_kind_instruct_is_the_fine_tuning_path(tmp_path, dataset):
	# `python -m dimgpt train --kind instruct --init-from CHECKPOINT` and `finetune --from RUN` build the
	# same run: recipe, train config (validation capped to the held-out conversations), loaders
	pretrained = make_pretrained(tmp_path / "pretrain")
	preset = replace(get_preset("tiny"), finetune=replace(RECIPE, eval_batches=50))
	start = pretrained / "checkpoints" / "last"
	by_train = build_trainer(preset, dataset, tmp_path / "a", init_from=start, kind="instruct", progress=False)
	by_finetune = build_finetuner(pretrained, dataset, tmp_path / "b", preset=preset, progress=False)
	try:
		assert by_train.recipe == by_finetune.recipe and by_train.config == by_finetune.config
		assert by_train.config.eval_batches == 2  # 6 held-out conversations, 4 a batch
		assert by_train.model_config == by_finetune.model_config == load_model(start).config
		for got, want in zip(by_train.val_batches, by_finetune.val_batches, strict=True):
			assert all(torch.equal(a, b) for a, b in zip(got, want))
		for _ in range(3):
			got, want = by_train.train_loader.next_batch(), by_finetune.train_loader.next_batch()
			assert all(torch.equal(a, b) for a, b in zip(got, want))
		weights = set(torch.cat([by_train.train_loader.next_batch()[2] for _ in range(4)]).unique().tolist())
		assert {round(w, 4) for w in weights} == {0.1, 1.0}  # instructions, answers (training rows are full)
	finally:
		by_train.close()
		by_finetune.close()


@pytest.mark.slow  # trains
def test_runs_take_the_recipe_of_the_run_they_continue_or_start_from(tmp_path, dataset, monkeypatch, capsys):
	# A preset of our own, registered like the catalogue's, with recipes no other preset has.
	from dimgpt.presets import PRESETS

	model = small_config(vocab_size=2_000, context_length=96, window=32, dim=48)  # make_pretrained's
	small = replace(RECIPE, batch_size=2, grad_accum=1, eval_every=2, eval_batches=1, checkpoint_every=2)
	fake = replace(get_preset("tiny"), name="fake", model=model, train=small, finetune=replace(small, lr=7e-4))
	monkeypatch.setitem(PRESETS, "fake", lambda: fake)
	pretrained, chat = tmp_path / "pretrained", tmp_path / "chat"
	common = ["--data", str(dataset), "--no-progress"]
	assert (
		main(
			[
				"train",
				"--kind",
				"instruct",
				"--preset",
				"fake",
				"--run-dir",
				str(pretrained),
				*common,
				"--max-steps",
				"2",
			]
		)
		== 0
	)
	# resumed without --preset: its own recipe (the tiny default would not even match the model)
	assert main(["train", "--kind", "instruct", "--run-dir", str(pretrained), *common, "--max-steps", "3"]) == 0
	assert "from step 2" in capsys.readouterr().out

	assert main(["finetune", "--from", str(pretrained), "--run-dir", str(chat), *common, "--max-steps", "2"]) == 0
	recipe = saved_recipe(chat / "checkpoints" / "last")
	assert recipe.name == "fake" and recipe.model == model
	assert recipe.train == replace(fake.finetune, max_steps=2)  # the pretrained run's fine-tuning recipe
	records = [json.loads(line) for line in (chat / "metrics.jsonl").read_text().splitlines()]
	first = next(r for r in records if "lr" in r)  # after the step-0 validation of the starting weights
	assert first["lr"] == pytest.approx(learning_rate(0, fake.finetune))

	# --preset overrides the saved recipe
	other = tmp_path / "chat-tiny"
	args = ["finetune", "--from", str(pretrained), "--run-dir", str(other), *common, "--max-steps", "1"]
	assert main([*args, "--preset", "tiny", "--set", "batch_size=2"]) == 0
	assert saved_recipe(other / "checkpoints" / "last").train.lr == get_preset("tiny").finetune.lr


def test_a_0_2b_run_is_fine_tuned_with_the_0_2b_recipe(tmp_path):
	# resolve_recipe is what `finetune --from` (and `train --init-from`) ask; no weights are read
	big = get_preset("dimensiongpt-0.2b")
	run = tmp_path / "pretrain-0.2b"
	(run / "checkpoints" / "last").mkdir(parents=True)
	save_json(big, run / "checkpoints" / "last" / "recipe.json")
	recipe, config = resolve_recipe(None, tmp_path / "chat", "instruct", run)
	assert recipe.name == "dimensiongpt-0.2b" and config == big.finetune and config.lr == 1e-4
	assert resolve_recipe(None, tmp_path / "chat", "pretrain", run)[1] == big.train
	assert resolve_recipe("tiny", tmp_path / "chat", "instruct", run)[1] == get_preset("tiny").finetune

	# weights saved without a recipe: the catalogue preset of the same model shape
	alone = tmp_path / "alone"
	alone.mkdir()
	save_json(big.model, alone / "model.json")
	(alone / "model.safetensors").touch()  # the config comes from model.json: the weights are not read
	assert resolve_recipe(None, tmp_path / "chat", "instruct", alone)[1] == big.finetune
	save_json(replace(big.model, n_layers=3), alone / "model.json")
	with pytest.raises(ValueError, match="--preset"):
		resolve_recipe(None, tmp_path / "chat", "instruct", alone)
