"""Run the benchmarks: every module of bench/ that runs as a script (`python -m bench.NAME`).

    .venv/bin/python -m bench                       # all of them, one after the other
    .venv/bin/python -m bench generation training   # some of them, by name
    .venv/bin/python -m bench generation --quick    # one of them, with its own options
    .venv/bin/python -m bench --list                # their names and what each measures

Each runs in its own process (with its default settings unless one benchmark is named with options),
prints its table and writes bench/results/NAME.json. A new module in bench/ with an
`if __name__ == "__main__":` block joins automatically. A benchmark that needs something this machine
lacks (a GPU, the French corpus) exits with `common.SKIPPED` and is reported as skipped, not failed.
"""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
import time
from pathlib import Path

from bench.common import RESULTS, SKIPPED, print_table

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent


def _is_script(tree: ast.Module) -> bool:
	"""True when the module has a top-level `if __name__ == "__main__":` block."""
	for node in tree.body:
		if isinstance(node, ast.If) and isinstance(node.test, ast.Compare):
			names = [node.test.left, *node.test.comparators]
			if any(isinstance(n, ast.Name) and n.id == "__name__" for n in names):
				return True
	return False


def discover() -> dict[str, str]:
	"""Benchmark name -> first line of its docstring, for every script module of bench/ (read, not imported)."""
	found = {}
	for path in sorted(BENCH.glob("*.py")):
		if path.stem.startswith("_"):
			continue
		tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
		if _is_script(tree):
			found[path.stem] = ((ast.get_docstring(tree) or "").strip().splitlines() or [""])[0]
	return found


def run(name: str, options: list[str]) -> tuple[str, float, list[str]]:
	"""Run bench.NAME in a child process; (status, seconds, results files it wrote)."""
	start = time.time()
	print(f"\n=== bench.{name} {' '.join(options)} ===", flush=True)
	code = subprocess.run([sys.executable, "-m", f"bench.{name}", *options], cwd=ROOT).returncode
	seconds = time.time() - start
	written = sorted(p.name for p in RESULTS.glob("*.json") if p.stat().st_mtime >= start) if RESULTS.is_dir() else []
	if code == SKIPPED:
		status = "skipped"
	elif code != 0:
		status = f"failed (exit {code})"
	elif not written:
		status = "failed (no results file)"
	else:
		status = "ok"
	return status, seconds, written


def main() -> None:
	benchmarks = discover()
	parser = argparse.ArgumentParser(
		prog="python -m bench", description="Run the benchmarks of bench/ (all by default)."
	)
	parser.add_argument("names", nargs="*", metavar="NAME", help=f"benchmarks to run: {', '.join(benchmarks)}")
	parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
	args, options = parser.parse_known_args()
	if args.list:
		print_table(
			"benchmarks (python -m bench NAME, or python -m bench.NAME --help for options)",
			["name", "measures"],
			list(benchmarks.items()),
		)
		return
	unknown = [name for name in args.names if name not in benchmarks]
	if unknown:
		parser.error(f"unknown benchmark {', '.join(unknown)}; choose among {', '.join(benchmarks)}")
	if options and len(args.names) != 1:
		parser.error(f"options {' '.join(options)} go to one benchmark: name exactly one")
	rows = [[name, *run(name, options)] for name in args.names or benchmarks]
	print_table(
		"benchmarks run",
		["name", "status", "seconds", "results"],
		[
			[name, status, seconds, ", ".join(f"bench/results/{f}" for f in files) or "-"]
			for name, status, seconds, files in rows
		],
	)
	if any(status.startswith("failed") for _, status, _, _ in rows):
		sys.exit(1)


if __name__ == "__main__":
	main()
