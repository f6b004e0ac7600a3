"""What a new user meets first: the README's commands, the notebooks' defaults, the help."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from dimgpt.cli import WORKFLOW

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def shell_lines() -> list[str]:
	"""The command lines of the README's bash blocks."""
	blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
	return [
		line.strip() for block in blocks for line in block.splitlines() if line.strip() and not line.startswith("#")
	]


def test_readme_commands_use_the_projects_python() -> None:
	# `python` is not the one holding the dependencies: make run and make test install them in .venv/
	python_lines = [line for line in shell_lines() if re.search(r"\bpython3?\b", line)]
	assert python_lines
	assert all(line.startswith(".venv/bin/python ") for line in python_lines), python_lines
	inline = re.findall(r"`([^`\n]*\bpython -m [^`\n]*)`", README)
	assert all(command.startswith(".venv/bin/python ") for command in inline), inline


def test_readme_walk_through_uses_sources_a_user_has() -> None:
	# corpus-fr lives beside the development checkout only; a fresh clone has the embedded corpus
	assert not [line for line in shell_lines() if "corpus-fr" in line]
	assert any("create-data --sources embedded" in line for line in shell_lines())


def parameters(notebook: str) -> dict[str, object]:
	cells = json.loads((ROOT / notebook).read_text(encoding="utf-8"))["cells"]
	code = next("".join(c["source"]) for c in cells if c["cell_type"] == "code")
	values: dict[str, object] = {}
	exec(code, {}, values)
	return values


def test_notebook_defaults_do_not_collide_with_make_run() -> None:
	make_run = Path(
		re.search(r"^RUN_DIR \?= runs/\$\(PRESET\)", (ROOT / "Makefile").read_text(), re.M)[0][11:].replace(
			"$(PRESET)", "tiny"
		)
	)
	training = parameters("training.ipynb")
	for folder in (training["RUN_DIR"], f"{training['RUN_DIR']}-chat", training["DATA_DIR"]):
		path = Path(folder)
		assert path != make_run and make_run not in path.parents, folder


def test_create_data_notebook_describes_its_default_corpus() -> None:
	text = (ROOT / "create_data.ipynb").read_text(encoding="utf-8")
	assert "French corpus embedded" not in text and "CPython's help topics" in text


def test_help_lists_presets_set_fields_and_exit_codes_in_workflow_order() -> None:
	out = subprocess.run(
		[sys.executable, "-m", "dimgpt", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
	).stdout
	order = re.findall(r"^    (\S+)", out, flags=re.M)
	assert order[:2] == ["run", "create-data"] and order == sorted(order, key=lambda name: WORKFLOW.index(name))
	assert "tiny" in out and "dimensiongpt-0.2b" in out and "3 not found" in out
	train = subprocess.run(
		[sys.executable, "-m", "dimgpt", "train", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
	).stdout
	assert "pretrain (or resume)" in train  # the command's own description
	assert "batch_size" in train and "grad_accum" in train  # the --set fields
