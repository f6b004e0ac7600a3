"""Training metrics: the JSON-lines log (and TensorBoard's), smoothing, and model FLOPs for MFU."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch

from dimgpt.config import ModelConfig

# Dense bf16 tensor-core peak (FLOP/s, no sparsity) by device name; MFU is left out for others.
PEAK_BF16_FLOPS = {
	"H200": 989e12,
	"H100 NVL": 835e12,
	"H100 PCIe": 756e12,
	"H100": 989e12,
	"GH200": 989e12,
	"A100": 312e12,
	"A10G": 70e12,
	"A10": 125e12,
	"L40S": 362e12,
	"L4": 121e12,
	"RTX 4090": 165e12,
	"RTX 3090": 71e12,
	"V100": 125e12,
	"T4": 65e12,
}


def peak_flops(device: torch.device) -> float | None:
	"""Peak dense bf16 FLOP/s of a CUDA device, when known."""
	if device.type != "cuda":
		return None
	name = torch.cuda.get_device_name(device)
	for key, flops in PEAK_BF16_FLOPS.items():  # most specific names first
		if key in name:
			return flops
	return None


def flops_per_token(config: ModelConfig) -> float:
	"""Training FLOPs per token: 6·N for the weights plus the attention scores and mixing.

	Each query meets on average `keys` keys (causal, at most window + 1 of them); QKᵀ and AV cost
	2·2·dim·keys per layer forward, three times that with the backward pass.
	"""
	t, w = config.context_length, config.window + 1
	keys = sum(min(i + 1, w) for i in range(t)) / t
	return 6 * config.num_parameters() + 12 * config.n_layers * config.dim * keys


class Smoother:
	"""Exponential moving average with bias correction (so early values are not pulled to 0)."""

	def __init__(self, beta: float = 0.98) -> None:
		self.beta, self.average, self.count = beta, 0.0, 0

	def update(self, value: float) -> float:
		self.count += 1
		self.average = self.beta * self.average + (1 - self.beta) * value
		return self.value

	@property
	def value(self) -> float:
		return self.average / (1 - self.beta**self.count) if self.count else float("nan")

	def state_dict(self) -> dict[str, Any]:
		return {"average": self.average, "count": self.count}

	def load_state_dict(self, state: dict[str, Any]) -> None:
		self.average, self.count = float(state["average"]), int(state["count"])


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
	"""All complete records of a metrics file (a torn last line from a kill is skipped)."""
	path = Path(path)
	if not path.exists():
		return []
	records = []
	for line in path.read_text(encoding="utf-8").splitlines():
		try:
			records.append(json.loads(line))
		except json.JSONDecodeError:
			continue
	return records


class MetricsLog:
	"""Append-only JSON-lines file, one record per line, each with its `step`; TensorBoard's copy beside it.

	On resume the lines written after the checkpoint (which the resumed run will write again)
	are dropped, so the file reads as if the run had never stopped. When the `tensorboard` package is
	installed (optional), every number of every record is also a TensorBoard scalar in
	RUN_DIR/tensorboard/ (`train/loss`, `validation/bits_per_byte`, ...; x axis: the step), whose
	events after the checkpoint are purged on resume the same way.
	"""

	def __init__(self, path: str | Path, resume_step: int | None = None, *, tensorboard: bool = True) -> None:
		self.path = Path(path)
		self.path.parent.mkdir(parents=True, exist_ok=True)
		kept = [r for r in read_metrics(self.path) if resume_step is not None and r.get("step", 0) <= resume_step]
		tmp = self.path.with_name(self.path.name + ".tmp")
		tmp.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
		os.replace(tmp, self.path)
		self.file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (lives as long as the run)
		self.board = tensorboard_writer(self.path.parent / "tensorboard", resume_step) if tensorboard else None

	def write(self, record: dict[str, Any]) -> None:
		self.file.write(json.dumps(record) + "\n")
		self.file.flush()
		if self.board is not None:
			for key, value in record.items():
				if key != "step" and isinstance(value, int | float) and math.isfinite(value):
					self.board.add_scalar(tensorboard_tag(key), value, record["step"])

	def sync(self) -> None:
		"""Make the lines written so far durable (called with each checkpoint)."""
		self.file.flush()
		os.fsync(self.file.fileno())
		if self.board is not None:
			self.board.flush()

	def close(self) -> None:
		self.file.close()
		if self.board is not None:
			self.board.close()


def tensorboard_tag(key: str) -> str:
	"""TensorBoard's name of a metrics key: val_loss -> validation/loss, lr -> train/lr."""
	return f"validation/{key[4:]}" if key.startswith("val_") else f"train/{key}"


def tensorboard_writer(directory: Path, resume_step: int | None = None) -> Any:
	"""A SummaryWriter on `directory` (events after `resume_step` purged), or None without the tensorboard package."""
	try:
		from torch.utils.tensorboard import SummaryWriter
	except ImportError:  # optional dependency (requirements-optional.txt)
		return None
	return SummaryWriter(str(directory), purge_step=None if resume_step is None else resume_step + 1)
