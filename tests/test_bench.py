"""`python -m bench`: the benchmarks are found in bench/ (not listed by hand), listed, chosen by name.

Running one takes minutes: that is checked by hand (`python -m bench generation --quick`), not here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.__main__ import discover

ROOT = Path(__file__).resolve().parents[1]


def test_every_script_module_of_bench_is_a_benchmark_and_only_those() -> None:
	found = discover()
	scripts = {p.stem for p in (ROOT / "bench").glob("*.py") if '__name__ == "__main__"' in p.read_text()}
	assert set(found) == scripts - {"__main__"}
	assert {"generation", "training"} <= set(found)
	assert "common" not in found  # helpers, not a benchmark
	assert found["generation"].startswith("Generation speed")


def test_list_and_unknown_name() -> None:
	listed = subprocess.run([sys.executable, "-m", "bench", "--list"], cwd=ROOT, capture_output=True, text=True)
	assert listed.returncode == 0
	for name in discover():
		assert f"\n{name} " in listed.stdout
	unknown = subprocess.run([sys.executable, "-m", "bench", "nope"], cwd=ROOT, capture_output=True, text=True)
	assert unknown.returncode == 2
	assert "unknown benchmark nope; choose among" in unknown.stderr
	two = subprocess.run(
		[sys.executable, "-m", "bench", "generation", "training", "--quick"], cwd=ROOT, capture_output=True, text=True
	)
	assert two.returncode == 2
	assert "options --quick go to one benchmark: name exactly one" in two.stderr
