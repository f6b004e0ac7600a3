"""Causal sliding-window attention with grouped-query heads, and its backends.

A query at position i sees the keys j with i - window <= j <= i (window + 1 keys, flash-attn's
`window_size=(window, 0)`). Keys and values have `n_kv_heads` heads, each shared by
`n_heads / n_kv_heads` consecutive query heads.

Backends, picked by `pick_backend` (best first):
- "flash_attn": the flash-attn package, on CUDA in float16/bfloat16;
- "flex": PyTorch FlexAttention with a sliding-window block mask (compiled on CUDA);
- "sdpa": `scaled_dot_product_attention`, with a boolean mask, or the plain causal fast path
  when the window covers the whole sequence. The default off CUDA.

Tensors are [batch, time, heads, head_dim] in and out, the layout the projections produce.
"""

from __future__ import annotations

import importlib.util
import math
from typing import Any

import torch
import torch.nn.functional as F

BACKENDS = ("flash_attn", "flex", "sdpa")


def flash_attn_available() -> bool:
	return importlib.util.find_spec("flash_attn") is not None


def flex_available() -> bool:
	return importlib.util.find_spec("torch.nn.attention.flex_attention") is not None


def pick_backend(device: torch.device | str, dtype: torch.dtype = torch.float32) -> str:
	"""The fastest backend that works for tensors of this device and dtype."""
	device = torch.device(device)
	if device.type == "cuda":
		if flash_attn_available() and dtype in (torch.float16, torch.bfloat16):
			return "flash_attn"
		if flex_available():
			return "flex"
	return "sdpa"


def window_mask(query_positions: torch.Tensor, key_positions: torch.Tensor, window: int) -> torch.Tensor:
	"""Boolean [queries, keys] mask, True where the query may attend the key."""
	distance = query_positions[:, None] - key_positions[None, :]
	return (distance >= 0) & (distance <= window)


def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int) -> torch.Tensor:
	"""The plain maths in float64, the yardstick of the backends' tests."""
	_, T, H, D = q.shape
	q, k, v = (x.double().transpose(1, 2) for x in (q, k, v))
	k = k.repeat_interleave(H // k.shape[1], dim=1)
	v = v.repeat_interleave(H // v.shape[1], dim=1)
	scores = q @ k.transpose(-1, -2) / math.sqrt(D)
	positions = torch.arange(T, device=q.device)
	scores = scores.masked_fill(~window_mask(positions, positions, window), float("-inf"))
	return (scores.softmax(dim=-1) @ v).transpose(1, 2)


def prepare_mask(backend: str, T: int, window: int, device: torch.device) -> Any:
	"""What `attention` needs to mask a sequence of T tokens; computed once per forward, shared by layers."""
	if backend == "sdpa":
		if window >= T - 1:
			return None  # the window covers the sequence: plain causal
		positions = torch.arange(T, device=device)
		return window_mask(positions, positions, window)
	if backend == "flex":
		from torch.nn.attention.flex_attention import create_block_mask

		def sliding_window(b, h, q_idx, kv_idx):
			return (q_idx >= kv_idx) & (q_idx - kv_idx <= window)

		return create_block_mask(sliding_window, None, None, T, T, device=device)
	if backend == "flash_attn":
		return None
	raise ValueError(f"unknown attention backend {backend!r}; choose one of {BACKENDS}")


def attention(
	q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int, backend: str = "sdpa", mask: Any = None
) -> torch.Tensor:
	"""Causal sliding-window attention of a whole sequence (queries and keys at positions 0..T-1).

	`mask` is `prepare_mask(backend, T, window, device)`; it is built here when not given.
	"""
	T = q.shape[1]
	if mask is None and backend != "flash_attn":
		mask = prepare_mask(backend, T, window, q.device)
	if backend == "flash_attn":
		from flash_attn import flash_attn_func

		return flash_attn_func(q, k, v, causal=True, window_size=(window, 0))
	q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
	if backend == "flex":
		out = _flex_attention(q.device)(q, k, v, block_mask=mask, enable_gqa=True)
	else:
		# enable_gqa rather than repeating the key heads: as fast on CPU (bench/generation.py) and no copy.
		if mask is None:
			out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
		else:
			out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
	return out.transpose(1, 2)


_COMPILED_FLEX: dict[str, Any] = {}


def _flex_attention(device: torch.device) -> Any:
	from torch.nn.attention.flex_attention import flex_attention

	if device.type != "cuda":
		return flex_attention  # eager: correct everywhere, fast nowhere; used on CPU by the tests
	if "cuda" not in _COMPILED_FLEX:
		_COMPILED_FLEX["cuda"] = torch.compile(flex_attention, dynamic=False)
	return _COMPILED_FLEX["cuda"]


def decode_attention(
	q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, causal: bool = False
) -> torch.Tensor:
	"""Attention of new queries against cached keys, any order, under an explicit mask.

	q: [B, T, H, D]; k, v: [B, Hkv, S, D] (the cache layout); mask: None (every key visible) or a
	boolean [B, 1, T, S]; `causal`: no mask, key i seen by queries i and after (S = T). With one query
	per sequence the query heads of a group are stacked as rows against their shared key head, so no
	key is ever repeated.
	"""
	B, T, H, D = q.shape
	groups = H // k.shape[1]
	if T == 1:
		q = q.view(B, k.shape[1], groups, D)  # query head h uses key head h // groups
		out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
		return out.reshape(B, 1, H, D)
	out = F.scaled_dot_product_attention(q.transpose(1, 2), k, v, attn_mask=mask, is_causal=causal, enable_gqa=True)
	return out.transpose(1, 2)
