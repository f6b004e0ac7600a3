"""The main job, end to end: create data → pretrain → fine-tune → chat.

Each stage writes into its own folder of the run directory and resumes what is already there, so
re-running the job after an interruption (or after it finished) carries on instead of starting over:

	RUN_DIR/data/      tokenizer (vocab.txt), pretraining shards, instruction store, data.json
	RUN_DIR/pretrain/  checkpoints/{last,best}/, metrics.jsonl, loss.png, accuracy.png
	RUN_DIR/chat/      the fine-tuned chat model, same layout, plus finetune.json (loss before/after)
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from dimgpt.config import Preset
from dimgpt.presets import get_preset

# Asked to the chat model at the end of the job (the shipped instruction set is French).
QUESTIONS = ("Bonjour !", "Qui es-tu ?", "Quelle est la capitale de la France ?")


def _stage(number: int, title: str) -> float:
	print(f"\n=== {number}/4 {title} " + "=" * max(0, 60 - len(title)), flush=True)
	return time.perf_counter()


def run_main_job(
	preset: str | Preset = "tiny",
	run_dir: str | Path = "runs/tiny",
	*,
	pretrain_seconds: float | None = None,
	finetune_seconds: float | None = None,
	questions: Sequence[str] = QUESTIONS,
	progress: bool = True,
) -> dict[str, Any]:
	"""Run (or resume) the whole pipeline of `preset` into `run_dir`; return where everything is.

	pretrain_seconds / finetune_seconds: wall-clock training budgets (summed over resumes) on top of
	the preset's step budgets; None keeps the preset's.
	"""
	from dimgpt.data.create import create_data
	from dimgpt.sampling import ChatSession, SamplingConfig, load_sampler
	from dimgpt.training.build import train
	from dimgpt.training.finetune import finetune

	preset = get_preset(preset) if isinstance(preset, str) else preset
	run_dir = Path(run_dir)
	data_dir, pretrain_dir, chat_dir = run_dir / "data", run_dir / "pretrain", run_dir / "chat"
	times: dict[str, float] = {}
	print(f"dimgpt main job: preset {preset.name!r} into {run_dir}")

	start = _stage(1, "create data (tokenizer, token shards, instruction store)")
	create_data(preset.data, data_dir, progress=progress)
	times["create data"] = time.perf_counter() - start

	start = _stage(2, "pretrain")
	train(preset, data_dir, pretrain_dir, progress=progress, **_budget(pretrain_seconds))
	times["pretrain"] = time.perf_counter() - start

	start = _stage(3, "fine-tune on conversations")
	finetune(pretrain_dir, data_dir, chat_dir, preset=preset, progress=progress, **_budget(finetune_seconds))
	times["fine-tune"] = time.perf_counter() - start

	start = _stage(4, "chat")
	sampler = load_sampler(chat_dir, vocab=data_dir / "vocab.txt", device="auto")
	settings = replace(SamplingConfig(), max_new_tokens=64, seed=0)
	for question in questions:
		session = ChatSession(sampler, settings=settings)
		print(f"> {question}")
		print(session.ask(question).strip() or "(empty answer)")
	times["chat"] = time.perf_counter() - start

	where = {
		"vocabulary": data_dir / "vocab.txt",
		"dataset": data_dir,
		"pretrained model": pretrain_dir / "checkpoints",
		"chat model": chat_dir / "checkpoints",
		"plots": [pretrain_dir / "loss.png", pretrain_dir / "accuracy.png", chat_dir / "loss.png"],
	}
	print("\n=== done " + "=" * 62)
	for stage, seconds in times.items():
		print(f"{stage:>12}: {seconds:7.1f} s")
	for name, path in where.items():
		paths = path if isinstance(path, list) else [path]
		print(f"{name:>17}: {', '.join(str(p) for p in paths)}")
	print(f"chat with it:     .venv/bin/python -m dimgpt chat --model {chat_dir}")
	return {"times": times, **where}


def _budget(seconds: float | None) -> dict[str, float]:
	return {} if seconds is None else {"max_seconds": seconds}
