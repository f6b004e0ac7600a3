"""Execute a notebook in the test suite, with its parameters cell overridden."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
	import nbformat

ROOT = Path(__file__).resolve().parents[1]


def execute_notebook(name: str, parameters: dict[str, Any], cwd: Path, timeout: int = 600) -> nbformat.NotebookNode:
	"""Run ROOT/name top to bottom in `cwd` and return the executed notebook.

	The first code cell tagged `parameters` holds plain `NAME = value` lines; each NAME given in
	`parameters` gets `repr(value)` instead, as a user editing that cell would.
	"""
	import nbformat  # here, not at the top: 2 s of imports that only the (slow) notebook tests need
	from nbclient import NotebookClient

	notebook = nbformat.read(ROOT / name, as_version=4)
	cell = next(c for c in notebook.cells if c.cell_type == "code" and "parameters" in c.metadata.get("tags", []))
	source = cell.source
	for key, value in parameters.items():
		pattern = re.compile(rf"^{re.escape(key)}\s*=.*$", re.MULTILINE)
		if not pattern.search(source):
			raise KeyError(f"{name}: no `{key} = ...` line in the parameters cell")
		source = pattern.sub(f"{key} = {value!r}", source)
	cell.source = source
	client = NotebookClient(
		notebook, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
	)
	client.execute()
	return notebook


def outputs_text(notebook: nbformat.NotebookNode) -> str:
	"""All text the notebook's cells printed, joined."""
	parts = []
	for cell in notebook.cells:
		for out in cell.get("outputs", []):
			if "text" in out:
				parts.append(out["text"])
			elif "data" in out and "text/plain" in out["data"]:
				parts.append(out["data"]["text/plain"])
	return "\n".join(parts)
