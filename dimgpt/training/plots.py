"""Loss, accuracy and bits-per-byte plots made from a run's metrics file (also while the run is going)."""

from __future__ import annotations

import os
from pathlib import Path

from dimgpt.training.metrics import read_metrics


def _plot(records: list[dict], key: str, label: str, path: Path) -> Path:
	# matplotlib is imported here, not with the module: it costs ~0.6 s and every command that trains imports this
	from matplotlib.backends.backend_agg import FigureCanvasAgg
	from matplotlib.figure import Figure
	from matplotlib.ticker import EngFormatter

	train = [r for r in records if key in r]
	val = [r for r in records if f"val_{key}" in r]
	figure = Figure(figsize=(8, 4.5), dpi=100)
	FigureCanvasAgg(figure)
	ax = figure.add_subplot()
	if train:
		tokens = [r["tokens"] for r in train]
		ax.plot(tokens, [r[key] for r in train], color="tab:blue", alpha=0.25, linewidth=0.8, label="train")
		ax.plot(tokens, [r[f"{key}_smooth"] for r in train], color="tab:blue", linewidth=1.6, label="train (smoothed)")
	if val:
		ax.plot(
			[r["tokens"] for r in val],
			[r[f"val_{key}"] for r in val],
			"o-",
			color="tab:orange",
			markersize=3,
			label="validation",
		)
	ax.set_xlabel("tokens")
	ax.xaxis.set_major_formatter(EngFormatter())
	ax.set_ylabel(label)
	ax.grid(alpha=0.3)
	if train or val:
		ax.legend()
	figure.tight_layout()
	tmp = path.with_name(f".{path.stem}.tmp.png")  # readers never see a half-written image
	figure.savefig(tmp)
	os.replace(tmp, path)
	return path


def plot_metrics(run_dir: str | Path) -> tuple[Path, Path, Path]:
	"""Write RUN_DIR/loss.png, accuracy.png and bits_per_byte.png (validation) from RUN_DIR/metrics.jsonl."""
	run_dir = Path(run_dir)
	records = read_metrics(run_dir / "metrics.jsonl")
	for r in records:
		if "accuracy" in r:
			r["accuracy"], r["accuracy_smooth"] = 100 * r["accuracy"], 100 * r["accuracy_smooth"]
		if "val_accuracy" in r:
			r["val_accuracy"] = 100 * r["val_accuracy"]
	loss = _plot(records, "loss", "loss (cross-entropy, nats)", run_dir / "loss.png")
	accuracy = _plot(records, "accuracy", "next-token accuracy (%)", run_dir / "accuracy.png")
	bits = _plot(records, "bits_per_byte", "validation bits per byte (text tokens)", run_dir / "bits_per_byte.png")
	return loss, accuracy, bits
