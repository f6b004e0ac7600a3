"""Command line: one sub-command per job (`python -m dimgpt COMMAND --help`).

Handlers import their modules lazily so that `--help` stays instant.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = []


def command(add: Callable[[argparse._SubParsersAction], None]) -> Callable[[argparse._SubParsersAction], None]:
	"""Register a function that adds one sub-command to the parser."""
	COMMANDS.append(add)
	return add


@command
def _run(sub: argparse._SubParsersAction) -> None:
	p = sub.add_parser("run", help="the main job, end to end on the embedded default corpus")
	p.add_argument("--preset", default="tiny", help="configuration preset (default: tiny)")
	p.add_argument("--run-dir", default="runs/tiny", help="where everything the job makes goes")

	def handler(args: argparse.Namespace) -> int:
		from dimgpt.pipeline import run_main_job

		run_main_job(preset=args.preset, run_dir=args.run_dir)
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

	def handler(args: argparse.Namespace) -> int:
		from dimgpt.export import export_command

		export_command(args.model, args.out_dir, vocab=args.vocab)
		return 0

	p.set_defaults(handler=handler)


def build_parser() -> argparse.ArgumentParser:
	parser = argparse.ArgumentParser(prog="python -m dimgpt", description=__doc__.splitlines()[0])
	sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
	for add in COMMANDS:
		add(sub)
	return parser


def main(argv: list[str] | None = None) -> int:
	args = build_parser().parse_args(argv)
	return int(args.handler(args) or 0)
