"""Key/value cache for generation: a rolling buffer of `window + 1` slots per layer.

A query sees at most `window + 1` keys (itself and the `window` before it), so each layer keeps
only that many: the key of position p lives in slot p % size and overwrites the one that just
left the window. Memory is O(window) however many tokens are generated.

Positions keep counting past `context_length`: the cache computes exactly what a full forward
over the whole sequence computes (RoPE only sees relative distances and each layer only looks
`window` tokens back). The release instead re-ran the model on the last `context_length` tokens
with positions restarted at 0, which gives different numbers once the sequence is longer than
the context.

Batched prompts of different lengths are left-padded; `padding` marks the real tokens, and a
padded slot is never attended by a real query.
"""

from __future__ import annotations

import torch

from dimgpt.config import ModelConfig
from dimgpt.model.attention import decode_attention


class KVCache:
	def __init__(
		self,
		config: ModelConfig,
		batch_size: int,
		device: torch.device | str = "cpu",
		dtype: torch.dtype = torch.float32,
		max_tokens: int | None = None,
	) -> None:
		"""`max_tokens` (prompt + generation), when known, shrinks the buffers below `window + 1`."""
		self.window = config.window
		self.size = config.window + 1 if max_tokens is None else min(config.window + 1, max_tokens)
		shape = (batch_size, config.n_kv_heads, self.size, config.head_dim)
		self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layers)]
		self.values = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layers)]
		self.slot_positions = torch.full((self.size,), -1, dtype=torch.long, device=device)  # -1: empty
		self.slot_real = torch.ones(batch_size, self.size, dtype=torch.bool, device=device)
		self.position = 0  # tokens seen so far
		self.last_padding = -1  # position of the last padded token (no device sync to know if one is left)
		self._step: tuple | None = None

	def begin(self, T: int, padding: torch.Tensor | None = None) -> torch.Tensor:
		"""Plan a step of T new tokens (shared by every layer); returns their positions."""
		device = self.slot_positions.device
		positions = torch.arange(self.position, self.position + T, device=device)
		if padding is None:
			real = None
		else:
			real = padding.to(device=device, dtype=torch.bool)
			padded = (~real).any(dim=0).nonzero()
			if len(padded):
				self.last_padding = self.position + int(padded[-1])
		keep = min(T, self.size)  # only the last `size` new keys can still be seen later
		if T == 1:
			slots = self.position % self.size
			# Write first, then attend over the buffer: the slot overwritten held position p - window - 1,
			# just out of reach.
			self.slot_positions[slots] = self.position
			self.slot_real[:, slots] = True if real is None else real[:, 0]
			oldest = self.position + 1 - self.size  # position held by the oldest slot once full
			if oldest >= 0 and self.last_padding < oldest:
				mask = None
			else:
				mask = ((self.slot_positions >= 0)[None, :] & self.slot_real)[:, None, None, :]
		else:
			if real is None:
				real = torch.ones(self.slot_real.shape[0], T, dtype=torch.bool, device=device)
			slots = positions[T - keep :] % self.size
			# Attend over [old buffer, new keys]: writing first could overwrite keys the earlier
			# new queries still need.
			key_positions = torch.cat([self.slot_positions, positions])
			key_real = torch.cat([self.slot_real, real], dim=1)
			distance = positions[:, None] - key_positions[None, :]
			visible = (distance >= 0) & (distance <= self.window) & (key_positions >= 0)[None, :]
			# A padded query still sees itself, so its (unused) row never becomes NaN.
			itself = torch.zeros_like(visible)
			itself[:, self.size :] = torch.eye(T, dtype=torch.bool, device=device)
			mask = (visible[None] & key_real[:, None, :]) | (itself[None] & ~real[:, :, None])
			mask = mask[:, None]
			self.slot_positions[slots] = positions[T - keep :]
			self.slot_real[:, slots] = real[:, T - keep :]
		self._step = (T, keep, slots, mask)
		return positions

	def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
		"""Store this layer's new keys/values and attend. q: [B,T,H,D]; k, v: [B,T,Hkv,D]."""
		T, keep, slots, mask = self._step
		k, v = k.transpose(1, 2), v.transpose(1, 2)
		cache_k, cache_v = self.keys[layer], self.values[layer]
		if T == 1:
			cache_k[:, :, slots] = k[:, :, 0]  # slots is a plain int here: a copy, not an index_put
			cache_v[:, :, slots] = v[:, :, 0]
			return decode_attention(q, cache_k, cache_v, mask)
		all_k = torch.cat([cache_k, k], dim=2)
		all_v = torch.cat([cache_v, v], dim=2)
		cache_k[:, :, slots] = k[:, :, T - keep :]
		cache_v[:, :, slots] = v[:, :, T - keep :]
		return decode_attention(q, all_k, all_v, mask)

	def end(self) -> None:
		T = self._step[0]
		self.position += T
		self._step = None

	def memory_bytes(self) -> int:
		return sum(t.numel() * t.element_size() for t in self.keys + self.values)
