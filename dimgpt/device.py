"""Which device and number format a job runs on: chosen here only.

`pick_device("auto")` is the GPU when there is one, else the CPU; training (`dimgpt.training`),
sampling, evaluation and the notebooks all ask it. bf16 is used where the GPU supports it: for the
weights at inference (`inference_dtype`) and for autocast in training (`TrainConfig.precision="auto"`).
"""

from __future__ import annotations

import torch


def pick_device(device: str | torch.device | None = "auto") -> torch.device:
	""" "auto" (or None): CUDA when there is a GPU, else the CPU; anything else as torch names it ("cuda:1")."""
	if device is None or device == "auto":
		return torch.device("cuda" if torch.cuda.is_available() else "cpu")
	return torch.device(device)


def supports_bf16(device: torch.device) -> bool:
	"""Whether `device` computes in bfloat16 at full speed (a CUDA GPU of the Ampere generation or later)."""
	return device.type == "cuda" and torch.cuda.is_bf16_supported()


def inference_dtype(device: torch.device) -> torch.dtype:
	"""The weights' type for generation and evaluation: bf16 on a GPU that supports it, else float32."""
	return torch.bfloat16 if supports_bf16(device) else torch.float32
