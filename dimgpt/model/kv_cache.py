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

from collections.abc import Sequence

import torch

from dimgpt.config import ModelConfig
from dimgpt.model.attention import decode_attention

CAUSAL = "causal"  # KVCache's plan for a prefill into an empty cache: attention needs no mask


class _Buffers:
	"""The buffers both caches share: per layer, zeroed keys and values of `rows` sequences x `size` slots."""

	def __init__(
		self, config: ModelConfig, rows: int, size: int, device: torch.device | str, dtype: torch.dtype
	) -> None:
		self.window, self.size = config.window, size
		shape = (rows, config.n_kv_heads, size, config.head_dim)
		self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layers)]
		self.values = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layers)]

	def memory_bytes(self) -> int:
		return sum(t.numel() * t.element_size() for t in self.keys + self.values)


class KVCache(_Buffers):
	def __init__(
		self,
		config: ModelConfig,
		batch_size: int,
		device: torch.device | str = "cpu",
		dtype: torch.dtype = torch.float32,
		max_tokens: int | None = None,
	) -> None:
		"""`max_tokens` (prompt + generation), when known, shrinks the buffers below `window + 1`."""
		size = config.window + 1 if max_tokens is None else min(config.window + 1, max_tokens)
		super().__init__(config, batch_size, size, device, dtype)
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
		elif self.position == 0 and real is None and keep == T:
			# An empty cache and no padding (a prefill): the new keys alone under plain causal attention,
			# which is the window's mask while T <= window + 1. No mask to build, and half the keys of the
			# path below, whose other half would be empty slots.
			slots = positions % self.size
			mask = CAUSAL
			self.slot_positions[slots] = positions
			self.slot_real[:, slots] = True
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
		if mask is CAUSAL:
			cache_k[:, :, slots] = k
			cache_v[:, :, slots] = v
			return decode_attention(q, k, v, None, causal=True)
		all_k = torch.cat([cache_k, k], dim=2)
		all_v = torch.cat([cache_v, v], dim=2)
		cache_k[:, :, slots] = k[:, :, T - keep :]
		cache_v[:, :, slots] = v[:, :, T - keep :]
		return decode_attention(q, all_k, all_v, mask)

	def end(self) -> None:
		T = self._step[0]
		self.position += T
		self._step = None


class RowCache(_Buffers):
	"""Decoding cache of independent sequences, one per row, for continuous batching.

	Each row holds its own sequence at its own positions (the positions it would have alone), in
	KVCache's slot layout (position p in slot p % (window + 1)). Sequences join with `add`, their
	prompts already run through a KVCache, and leave with `remove`, both between steps. Prompts of
	different lengths can be run together *right*-padded: causal attention keeps each real token from
	seeing the padding after it, and `add` drops the padded slots (while the batch is no longer than
	window + 1, no padding has overwritten a real slot of the rolling buffer).
	The rows in use are always 0..rows-1 (removing a row moves the last one into its place), so a
	step works on views of the buffers. A step feeds one new token per row.
	"""

	def __init__(
		self,
		config: ModelConfig,
		capacity: int,
		device: torch.device | str = "cpu",
		dtype: torch.dtype = torch.float32,
	) -> None:
		super().__init__(config, capacity, config.window + 1, device, dtype)
		self.slot_positions = torch.full((capacity, self.size), -1, dtype=torch.long, device=device)
		self.positions: list[int] = []  # tokens seen by each row in use (kept on the host: no sync per step)
		self._step: tuple | None = None

	@property
	def capacity(self) -> int:
		return self.slot_positions.shape[0]

	@property
	def rows(self) -> int:
		return len(self.positions)

	def add(self, cache: KVCache, lengths: Sequence[int]) -> int:
		"""Take over every sequence of a KVCache filled from position 0 without left padding, sequence i
		being its first `lengths[i]` tokens (the rest is right padding). The KVCache is of size window + 1,
		or smaller if it never wrapped (`make_cache(n, max_tokens=T)` for prompts of T tokens at most:
		a prefill then attends over T cached slots, not window + 1). Returns the row of the first
		sequence; the others follow it."""
		n = len(lengths)
		if n != cache.keys[0].shape[0]:
			raise ValueError(f"{n} lengths for a KVCache of {cache.keys[0].shape[0]} sequences")
		if self.rows + n > self.capacity:
			raise ValueError(f"the RowCache has room for {self.capacity - self.rows} more rows, not {n}")
		size = cache.size
		if cache.last_padding >= 0 or not (size == self.size or cache.position <= size < self.size):
			raise ValueError("RowCache.add takes a KVCache without left padding, of size window + 1 or never wrapped")
		if not all(0 < length <= cache.position for length in lengths) or (
			min(lengths) < cache.position and cache.position > self.size
		):
			raise ValueError(f"a right-padded batch must be at most {self.size} tokens long (window + 1)")
		first = self.rows
		block = slice(first, first + n)
		for layer in range(len(self.keys)):
			self.keys[layer][block, :, :size] = cache.keys[layer]
			self.values[layer][block, :, :size] = cache.values[layer]
		positions = cache.slot_positions[None, :]
		ends = torch.tensor(lengths, device=positions.device)[:, None]
		self.slot_positions[block] = -1
		self.slot_positions[block, :size] = positions.masked_fill(positions >= ends, -1)
		self.positions.extend(lengths)
		return first

	def remove(self, row: int) -> None:
		"""Free `row`; the last row moves into its place (the caller renumbers it likewise)."""
		last = self.rows - 1
		if row != last:
			for layer in range(len(self.keys)):
				self.keys[layer][row] = self.keys[layer][last]
				self.values[layer][row] = self.values[layer][last]
			self.slot_positions[row] = self.slot_positions[last]
			self.positions[row] = self.positions[last]
		self.slot_positions[last] = -1
		self.positions.pop()

	def begin(self, T: int, padding: torch.Tensor | None = None) -> torch.Tensor:
		"""Plan a step of one token per row in use; returns their positions, [rows, 1]."""
		if T != 1 or padding is not None:
			raise ValueError("a RowCache step feeds one token per row, without padding")
		device = self.slot_positions.device
		n = self.rows
		positions = torch.tensor(self.positions, dtype=torch.long, device=device)
		rows = torch.arange(n, device=device)
		slots = positions % self.size
		# Write first, then attend over the buffer, as KVCache does: the slot overwritten held a key
		# just out of the window.
		self.slot_positions[rows, slots] = positions
		if min(self.positions) + 1 >= self.size:
			mask = None  # every row's buffer is full: every key is within the window
		else:
			mask = (self.slot_positions[:n] >= 0)[:, None, None, :]
		self._step = (rows, slots, mask)
		return positions[:, None]

	def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
		"""Store this layer's new keys/values and attend. q: [rows,1,H,D]; k, v: [rows,1,Hkv,D]."""
		rows, slots, mask = self._step
		n = self.rows
		cache_k, cache_v = self.keys[layer][:n], self.values[layer][:n]
		cache_k[rows, :, slots] = k[:, 0]
		cache_v[rows, :, slots] = v[:, 0]
		return decode_attention(q, cache_k, cache_v, mask)

	def end(self) -> None:
		self.positions = [p + 1 for p in self.positions]
		self._step = None
