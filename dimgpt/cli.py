"""Command line: one sub-command per job (`.venv/bin/python -m dimgpt COMMAND --help`).

Handlers import their modules lazily so that `--help` stays instant.
"""

from __future__ import annotations

import argparse
import os
import sys
import typing
from collections.abc import Callable

COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = []
PROG = ".venv/bin/python -m dimgpt"  # how the README and the messages run it (the project's own Python)


def command(add: Callable[[argparse._SubParsersAction], None]) -> Callable[[argparse._SubParsersAction], None]:
	"""Register a function that adds one sub-command to the parser."""
	COMMANDS.append(add)
	return add


def _presets() -> list[str]:
	from dimgpt.presets import PRESETS

	return list(PRESETS)


@command
def _run(sub: argparse._SubParsersAction) -> None:
	p = sub.add_parser("run", help="the main job: create data, pretrain, fine-tune, chat (embedded corpus by default)")
	p.add_argument("--preset", default="tiny", choices=_presets(), help="configuration preset (default: tiny)")
	p.add_argument("--run-dir", help="where everything the job makes goes (default: runs/PRESET)")
	p.add_argument(
		"--pretrain-minutes",
		type=float,
		help="pretraining time budget (default: the preset's; 5 for tiny; none: the step budget alone)",
	)
	p.add_argument(
		"--finetune-minutes",
		type=float,
		help="fine-tuning time budget (default: the preset's; 2 for tiny; none: the step budget alone)",
	)
	p.add_argument("--no-progress", action="store_true", help="no progress bars")

	def handler(args: argparse.Namespace) -> int:
		from dimgpt.pipeline import run_main_job
		from dimgpt.presets import get_preset

		preset = get_preset(args.preset)

		def seconds(minutes: float | None, default: float | None) -> float | None:
			return minutes * 60 if minutes is not None else default

		run_main_job(
			preset,
			args.run_dir or f"runs/{args.preset}",
			pretrain_seconds=seconds(args.pretrain_minutes, preset.job_pretrain_seconds),
			finetune_seconds=seconds(args.finetune_minutes, preset.job_finetune_seconds),
			progress=not args.no_progress,
		)
		return 0

	p.set_defaults(handler=handler)


@command
def _export_hf(sub: argparse._SubParsersAction) -> None:
	p = sub.add_parser(
		"export-hf", help="write a Hugging Face transformers checkpoint (MistralForCausalLM + tokenizer)"
	)
	p.add_argument(
		"model", help="run directory, checkpoint directory, .safetensors file or DimensionGPT .pt state_dict"
	)
	p.add_argument("out_dir", help="directory to write the transformers checkpoint to")
	p.add_argument("--vocab", help="the model's vocab.txt (default: the one next to the model or in its run directory)")
	p.add_argument(
		"--checkpoint", default="auto", choices=("auto", "best", "last"), help="which checkpoint of a run directory"
	)

	def handler(args: argparse.Namespace) -> int:
		from dimgpt.export import export_command

		export_command(args.model, args.out_dir, vocab=args.vocab, checkpoint=args.checkpoint)
		return 0

	p.set_defaults(handler=handler)


def _figure(loss: float | None) -> str:
	"""A loss as people read it: three decimals ("none" before the first validation)."""
	return "none" if loss is None or loss != loss else f"{loss:.3f}"


def _stop_code(reason: str) -> int:
	"""Exit status of a training command by why it stopped (130/143: saved after Ctrl-C / SIGTERM)."""
	from dimgpt.errors import ExitCode

	return {"interrupted": ExitCode.INTERRUPTED, "terminated": ExitCode.TERMINATED}.get(reason, ExitCode.OK)


def _add_training_options(p: argparse.ArgumentParser, *, max_tokens: bool) -> None:
	"""The budget flags, --set and --no-progress of `train` and `finetune` (read by _train_overrides)."""
	p.add_argument("--max-steps", type=int, help="override the recipe's number of steps")
	if max_tokens:
		p.add_argument("--max-tokens", type=int, help="stop after this many training tokens")
	p.add_argument("--max-seconds", type=float, help="stop after this much training time (summed over resumes)")
	p.add_argument(
		"--set",
		action="append",
		default=[],
		metavar="FIELD=VALUE",
		help=f"override a TrainConfig field, VALUE as JSON (repeatable); fields: {', '.join(_train_fields())}",
	)
	p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _train_fields() -> list[str]:
	import dataclasses

	from dimgpt.config import TrainConfig

	return [f.name for f in dataclasses.fields(TrainConfig)]


def _train_overrides(args: argparse.Namespace) -> dict[str, object]:
	"""TrainConfig fields from `--set FIELD=VALUE` (JSON values, else strings) and the budget flags."""
	import dataclasses
	import json

	from dimgpt.config import TrainConfig, check_fields
	from dimgpt.errors import UsageError

	names = {f.name for f in dataclasses.fields(TrainConfig)}
	overrides: dict[str, object] = {}
	for item in args.set:
		name, _, value = item.partition("=")
		if name not in names:
			raise UsageError(f"--set {item}: TrainConfig has no field {name!r}; fields: {', '.join(sorted(names))}")
		try:
			overrides[name] = json.loads(value)
		except json.JSONDecodeError:
			overrides[name] = value
		try:
			check_fields(TrainConfig, {name: overrides[name]})
		except UsageError as error:
			raise UsageError(f"--set {item}: {error}") from None
	for name in ("max_steps", "max_tokens", "max_seconds"):
		if getattr(args, name, None) is not None:
			overrides[name] = getattr(args, name)
	return overrides


@command
def _finetune(sub: argparse._SubParsersAction) -> None:
	p = sub.add_parser("finetune", help="fine-tune a pretrained run on instruction conversations (chat model)")
	p.add_argument(
		"--from",
		dest="from_run",
		required=True,
		help="pretraining run directory, checkpoint directory, or weights file (the released DimensionGPT-0.2B.pt)",
	)
	p.add_argument("--run-dir", required=True, help="the fine-tuning run directory (resumed when it holds a run)")
	p.add_argument("--data", help="dataset folder with the instruction store (default: FROM/data)")
	p.add_argument(
		"--preset",
		choices=_presets(),
		help="use this preset's `finetune` recipe (default: the one saved with the pretrained run, or the "
		"fine-tuning run's own when resuming)",
	)
	p.add_argument("--checkpoint", default="auto", choices=("auto", "best", "last"), help="which pretrained checkpoint")
	_add_training_options(p, max_tokens=False)
	p.add_argument("--preprompt-ratio", type=float, help="share of training conversations given a preprompt")

	def handler(args: argparse.Namespace) -> int:
		import dataclasses
		from pathlib import Path

		from dimgpt.runs import dataset_mix
		from dimgpt.training.build import resolve_recipe
		from dimgpt.training.finetune import finetune

		data = Path(args.data) if args.data else Path(args.from_run) / "data"
		overrides = _train_overrides(args)
		mix = None
		if args.preprompt_ratio is not None:
			mix = dataset_mix(data, resolve_recipe(args.preset, args.run_dir, "instruct", args.from_run)[0])
			mix = dataclasses.replace(mix, preprompt_ratio=args.preprompt_ratio)
		result = finetune(
			args.from_run,
			data,
			args.run_dir,
			preset=args.preset,
			mix=mix,
			checkpoint=args.checkpoint,
			progress=not args.no_progress,
			**overrides,
		)
		print(
			f"fine-tuned to step {result.step}: validation loss {_figure(result.val_loss)}, best {_figure(result.best_val_loss)}"
		)
		return _stop_code(result.reason)

	p.set_defaults(handler=handler)


@command
def _train(sub: argparse._SubParsersAction) -> None:
	p = sub.add_parser("train", help="pretrain (or resume) a model on a dataset folder; also under torchrun")
	p.add_argument(
		"--preset",
		choices=_presets(),
		help="use this preset's recipe (default: the run's own when resuming, else the one saved with "
		"--init-from, else tiny)",
	)
	p.add_argument("--data", required=True, help="dataset folder made by create-data")
	p.add_argument(
		"--run-dir", required=True, help="checkpoints, metrics and plots go here; resumed when it holds a run"
	)
	p.add_argument(
		"--kind", default="pretrain", choices=("pretrain", "instruct"), help="loader and recipe (default: pretrain)"
	)
	p.add_argument("--init-from", help="start a new run from these weights (checkpoint directory or file)")
	_add_training_options(p, max_tokens=True)

	def handler(args: argparse.Namespace) -> int:
		from dimgpt.training.build import train

		overrides = _train_overrides(args)
		result = train(
			args.preset,
			args.data,
			args.run_dir,
			init_from=args.init_from,
			kind=args.kind,
			progress=not args.no_progress,
			**overrides,
		)
		return _stop_code(result.reason)

	p.set_defaults(handler=handler)


@command
def _decay(sub: argparse._SubParsersAction) -> None:
	p = sub.add_parser(
		"decay", help="turn a checkpoint of a WSD run's stable phase into a final model (the run stays extendable)"
	)
	p.add_argument("--run-dir", required=True, help="the run trained with --set schedule=wsd (its last checkpoint)")
	p.add_argument("--data", required=True, help="its dataset folder")
	p.add_argument("--steps", type=int, help="length of the decay (default: a quarter of the steps done)")
	p.add_argument("--out", help="run directory of the decayed model (default: RUN_DIR-decayed-STEP)")
	p.add_argument("--no-progress", action="store_true", help="no progress bar")

	def handler(args: argparse.Namespace) -> int:
		from dimgpt.training.build import decay

		result = decay(args.run_dir, args.data, args.steps, args.out, progress=not args.no_progress)
		print(f"decayed to step {result.step} in {result.run_dir}: validation loss {result.val_loss}")
		return _stop_code(result.reason)

	p.set_defaults(handler=handler)


@command
def _create_data(sub: argparse._SubParsersAction) -> None:
	p = sub.add_parser("create-data", help="sources -> tokenizer -> sharded token files (resumable)")
	p.add_argument("--preset", default="tiny", choices=_presets(), help="configuration preset (default: tiny)")
	p.add_argument(
		"--sources",
		nargs="+",
		metavar="SOURCE",
		help="a source list (embedded, corpus-fr, dimensiongpt) or sources [NAME=]PATH[@MULTIPLIER] "
		"(txt/jsonl/parquet files or globs; hf:DATASET_ID[:CONFIG] for the hub)",
	)
	p.add_argument("--instruct", nargs="*", metavar="SOURCE", help="instruction conversations, as --sources")
	p.add_argument("--out", help="dataset folder (default: data/PRESET)")
	p.add_argument("--vocab-size", type=int, help="override the preset's vocabulary size")
	p.add_argument("--tokenizer-chars", type=int, help="characters sampled to train the vocabulary")
	p.add_argument("--shard-tokens", type=int, help="tokens per shard file")
	p.add_argument("--force-tokenizer", action="store_true", help="train the vocabulary even if vocab.txt exists")
	p.add_argument("--vocab-only", action="store_true", help="only make vocab.txt (before the parts of --shard)")
	p.add_argument(
		"--shard",
		metavar="I/N",
		help="encode only the I-th of N slices of every source, into OUT/parts/I-of-N (one per machine; "
		"needs OUT/vocab.txt); then run merge-data OUT",
	)
	p.add_argument("--workers", type=int, help="worker processes (default: every core this process may use)")
	p.add_argument(
		"--quality",
		action="append",
		default=[],
		metavar="SWITCH=VALUE",
		help="a document filter or deduplication setting, e.g. digits=off, near_duplicates=off, "
		"dedup_bands=20 (repeatable)",
	)
	p.add_argument("--no-progress", action="store_true", help="no progress bars")

	def handler(args: argparse.Namespace) -> int:
		from dimgpt.data.create import run_cli

		return run_cli(args)

	p.set_defaults(handler=handler)


@command
def _merge_data(sub: argparse._SubParsersAction) -> None:
	p = sub.add_parser(
		"merge-data",
		help="join the parts made by create-data --shard into one dataset, deduplicated as one run (no token copied)",
	)
	p.add_argument("out", help="the dataset folder given to create-data --out (it holds parts/I-of-N)")
	p.add_argument("--no-progress", action="store_true", help="no summary table")

	def handler(args: argparse.Namespace) -> int:
		from dimgpt.data.merge import merge_data

		merge_data(args.out, progress=not args.no_progress)
		print(f"dataset written to {args.out}")
		return 0

	p.set_defaults(handler=handler)


@command
def _verify_data(sub: argparse._SubParsersAction) -> None:
	p = sub.add_parser("verify-data", help="check every shard of a dataset against its checksum")
	p.add_argument("data", help="dataset folder made by create-data")
	p.add_argument("--no-progress", action="store_true", help="no progress bar")

	def handler(args: argparse.Namespace) -> int:
		from dimgpt.data.store import verify_dataset
		from dimgpt.errors import ExitCode

		checked, problems = verify_dataset(args.data, progress=not args.no_progress)
		for problem in problems:  # every damaged shard, one line each
			print(f"error: {problem}", file=sys.stderr)
		if problems:
			return ExitCode.BAD_FILE
		print(f"{checked} shards match their checksums")
		return 0

	p.set_defaults(handler=handler)


@command
def _evaluate(sub: argparse._SubParsersAction) -> None:
	p = sub.add_parser(
		"evaluate", help="score a model on text (bits per byte, loss, accuracy) or on lm-evaluation-harness tasks"
	)
	_add_model_arguments(p, required=True)
	what = p.add_mutually_exclusive_group(required=True)
	what.add_argument(
		"--text", nargs="+", metavar="FILE", help="txt / jsonl / parquet files ([NAME=]PATH, globs), one row each"
	)
	what.add_argument("--data", help="a dataset folder made by create-data: score one of its splits (see --split)")
	what.add_argument(
		"--tasks", help="lm-evaluation-harness tasks, comma-separated: names or task YAML files (needs lm-eval)"
	)
	p.add_argument("--split", default="validation", help="--data: which split (default: validation)")
	p.add_argument("--text-column", default="text", help="jsonl / parquet column holding the text (default: text)")
	p.add_argument("--stride", type=int, help="tokens between windows on long documents (default: context / 2)")
	p.add_argument("--batch-size", type=int, help="windows per forward pass (default: by the logits' memory)")
	p.add_argument("--num-fewshot", type=int, help="--tasks: examples in each prompt (default: the task's)")
	p.add_argument("--limit", type=float, help="--tasks: score only this many examples per task (or this fraction)")
	p.add_argument("--json", metavar="OUT", help="also write the results as JSON to this file")
	p.add_argument("--no-progress", action="store_true", help="no progress bar")

	def handler(args: argparse.Namespace) -> int:
		from dimgpt.evaluation import evaluate_command

		return evaluate_command(args)

	p.set_defaults(handler=handler)


def _add_model_arguments(p: argparse.ArgumentParser, required: bool = False) -> None:
	"""--model, --vocab and --device: the weights to load and where (generate, chat, serve, evaluate).
	`required`: no default model (evaluate scores the model it is given, never the released one by chance)."""
	weights = "run directory, checkpoint directory, .safetensors file or DimensionGPT .pt"
	if required:
		p.add_argument("--model", required=True, help=weights)
	else:
		p.add_argument("--model", default="models/DimensionGPT-0.2B-Chat.pt", help=f"{weights} (default: %(default)s)")
	p.add_argument("--vocab", help="vocab.txt (default: next to the model, in its run directory, or data/vocab.txt)")
	p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ... (default: auto)")


def _add_sampling_arguments(p: argparse.ArgumentParser) -> None:
	_add_model_arguments(p)
	p.add_argument(
		"--profile",
		choices=("standard", "dimensiongpt"),
		default="standard",
		help="standard: transformers' temperature/top-k/top-p/min-p, defaults temperature 0.5, top-p 0.9, "
		"penalty 1.0; dimensiongpt: what the release's notebook ran, temperature 0.9, top-p off, no penalty "
		"(default: standard)",
	)
	p.add_argument("--temperature", type=float, help="0 = greedy (default: the profile's)")
	p.add_argument("--top-k", type=int, help="0 = off (standard profile; default: 0)")
	p.add_argument("--top-p", type=float, help="1 = off (default: the profile's)")
	p.add_argument("--min-p", type=float, help="0 = off (standard profile; default: 0)")
	p.add_argument(
		"--top-p-rule",
		choices=("standard", "dimensiongpt"),
		help="top-p boundary: standard keeps the token that reaches top-p, dimensiongpt drops it (default: the profile's)",
	)
	p.add_argument("--repetition-penalty", type=float, help="DimensionGPT's, 0 = off (default: the profile's)")
	p.add_argument("--max-new-tokens", type=int, default=512, help="(default: 512)")
	p.add_argument("--seed", type=int, help="for reproducible sampling")
	p.add_argument("--line-width", type=int, default=150, help="wrap streamed lines (0 = never; default: 150)")


def _sampler_and_settings(args: argparse.Namespace):
	from dimgpt.sampling import SamplingConfig, load_sampler

	given = {
		name: getattr(args, name)
		for name in ("temperature", "top_k", "top_p", "min_p", "top_p_rule", "repetition_penalty")
		if getattr(args, name) is not None
	}
	settings = SamplingConfig.for_profile(args.profile, **given, max_new_tokens=args.max_new_tokens, seed=args.seed)
	return load_sampler(args.model, args.vocab, args.device), settings


@command
def _generate(sub: argparse._SubParsersAction) -> None:
	p = sub.add_parser("generate", help="continue a prompt with a model (text in, text out)")
	p.add_argument("prompt", nargs="?", default="", help="the text to continue (default: empty, free generation)")
	_add_sampling_arguments(p)
	p.add_argument("--no-stream", action="store_true", help="print the text once finished, not token by token")

	def handler(args: argparse.Namespace) -> int:
		sampler, settings = _sampler_and_settings(args)
		if args.no_stream:
			print(args.prompt + sampler.generate(args.prompt, settings))
		else:
			print(args.prompt, end="", flush=True)
			sampler.generate(args.prompt, settings, stream=True, line_width=args.line_width)
		return 0

	p.set_defaults(handler=handler)


@command
def _chat(sub: argparse._SubParsersAction) -> None:
	p = sub.add_parser("chat", help="chat with a model in the terminal (/reset, /system TEXT, /quit)")
	_add_sampling_arguments(p)
	p.add_argument("--system", help="system preprompt placed before the conversation")

	def handler(args: argparse.Namespace) -> int:
		from dimgpt.sampling import ChatSession

		sampler, settings = _sampler_and_settings(args)
		chat = ChatSession(sampler, system=args.system, settings=settings)
		print("Chat: /reset forgets the conversation, /system TEXT sets the preprompt, /quit or Ctrl-D leaves.")
		while True:
			try:
				question = input("\n> ").strip()
			except (EOFError, KeyboardInterrupt):
				print()
				return 0
			if question in ("/quit", "/exit"):
				return 0
			if question == "/reset":
				chat.reset()
				print("(conversation forgotten)")
				continue
			if question == "/system" or question.startswith("/system "):
				chat.system = question[len("/system") :].strip() or None
				chat.reset()
				print(
					f"(system preprompt: {chat.system!r}; conversation restarted)"
					if chat.system
					else "(no system preprompt; conversation restarted)"
				)
				continue
			if question.startswith("/"):
				print(f"(unknown command {question.split()[0]}: /reset, /system TEXT, /quit)")
				continue
			if question:
				chat.ask(question, stream=True, line_width=args.line_width)

	p.set_defaults(handler=handler)


@command
def _serve(sub: argparse._SubParsersAction) -> None:
	p = sub.add_parser("serve", help="serve a model: OpenAI-compatible HTTP API and a web chat page")
	_add_model_arguments(p)
	p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s, this machine only)")
	p.add_argument("--port", type=int, default=8000, help="(default: %(default)s)")
	p.add_argument("--max-batch", type=int, default=16, help="requests decoded together (default: %(default)s)")
	p.add_argument(
		"--max-queue", type=int, default=64, help="requests waiting for a free slot before 503s (default: %(default)s)"
	)
	p.add_argument(
		"--max-tokens", type=int, default=512, help="most new tokens one request may ask for (default: %(default)s)"
	)
	p.add_argument(
		"--api-key",
		default=os.environ.get("DIMGPT_API_KEY"),
		help="require 'Authorization: Bearer KEY' on every endpoint (default: $DIMGPT_API_KEY, else none)",
	)

	def handler(args: argparse.Namespace) -> int:
		from dimgpt.errors import UsageError
		from dimgpt.serve.api import Limits, serve

		if args.max_batch < 1 or args.max_queue < 0 or args.max_tokens < 1:
			raise UsageError("--max-batch and --max-tokens must be at least 1, --max-queue at least 0")
		serve(
			args.model,
			vocab=args.vocab,
			device=args.device,
			host=args.host,
			port=args.port,
			max_batch=args.max_batch,
			max_queue=args.max_queue,
			limits=Limits(max_tokens=args.max_tokens),
			api_key=args.api_key or None,
		)
		return 0

	p.set_defaults(handler=handler)


# The order `--help` lists the commands in: the order of the work (commands not named here go last).
WORKFLOW = (
	"run",
	"create-data",
	"merge-data",
	"verify-data",
	"train",
	"decay",
	"finetune",
	"evaluate",
	"generate",
	"chat",
	"serve",
	"export-hf",
)


def _epilog() -> str:
	from dimgpt.errors import ExitCode
	from dimgpt.presets import PRESETS

	presets = ", ".join(PRESETS)  # the details: README's "Presets and what they cost"
	codes = ", ".join(f"{int(code)} {code.name.lower().replace('_', ' ')}" for code in ExitCode)
	return (
		f"presets (--preset): {presets}. workflow: create-data -> train -> finetune -> chat / generate / "
		f"export-hf (run does all of it). exit codes: {codes}. DIMGPT_DEBUG=1 shows the traceback of an error."
	)


class _Parser(argparse.ArgumentParser):
	"""argparse with a one-line error, like every other error of the command line (exit code 2, usage)."""

	def error(self, message: str) -> typing.NoReturn:
		self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
	parser = _Parser(prog=PROG, description=__doc__.splitlines()[0], epilog=_epilog())
	sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
	position = {name: i for i, name in enumerate(WORKFLOW)}
	for add in sorted(COMMANDS, key=lambda add: position.get(add.__name__.strip("_").replace("_", "-"), len(WORKFLOW))):
		add(sub)
	for action in sub._choices_actions:  # each command's --help opens with its one-line summary
		command_parser = sub.choices[action.dest]
		if command_parser.description is None:
			command_parser.description = action.help
		if command_parser.epilog is None:
			command_parser.epilog = parser.epilog
	return parser


def main(argv: list[str] | None = None) -> int:
	"""Run one command; a user error prints one line and exits with its code from `dimgpt.errors.ExitCode`."""
	from dimgpt.errors import NotFoundError, UsageError, UserError, disk_error

	args = build_parser().parse_args(argv)
	try:
		return int(args.handler(args) or 0)
	except (UserError, OSError, ValueError) as error:
		# Errors a user can meet carry their own fix: print that, not a traceback. An OSError from
		# the machine (a file that vanished, a full disk, a read-only folder) is one too.
		# DIMGPT_DEBUG=1 shows the traceback.
		if os.environ.get("DIMGPT_DEBUG"):
			raise
		if isinstance(error, ValueError) and not isinstance(error, UserError):
			# The configuration's own checks still raise ValueError: a bad setting, one line.
			error = UsageError(str(error))
		elif isinstance(error, OSError) and not isinstance(error, UserError):
			known = disk_error(error, error.filename or "the output folder", "writing")
			if known is None and isinstance(error, FileNotFoundError):
				known = NotFoundError(f"{error.filename or error}: no such file or folder")
			if known is None:
				raise
			error = known
		assert isinstance(error, UserError)
		print(f"error: {error}", file=sys.stderr)
		return int(error.exit_code)
