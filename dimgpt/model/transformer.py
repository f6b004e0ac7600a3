"""The DimensionGPT transformer: pre-norm blocks of grouped-query sliding-window attention and SwiGLU.

The `state_dict` keys are those of the released weights (`blocks.{i}.attention.query.weight`, ...; the
list is in docs/dimensiongpt.md), so released files load unchanged and ours load in the original code.
Inside, the query/key/value projections are one Linear (`attention.qkv`) and so are the SwiGLU's
linear_1/linear_2 (`feed_forward.linear_12`): one matmul each, in training and in generation alike;
`release_keys` splits them on save and concatenates them on load. No biases; the output layer is tied
to the embedding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dimgpt.config import ModelConfig
from dimgpt.model.attention import attention, pick_backend, prepare_mask
from dimgpt.model.kv_cache import KVCache


class RMSNorm(nn.Module):
	def __init__(self, dim: int, eps: float = 1e-5) -> None:
		super().__init__()
		self.eps = eps
		self.weight = nn.Parameter(torch.ones(dim))

	def forward(self, x: torch.Tensor) -> torch.Tensor:
		# x * rsqrt(mean(x²) + eps) * weight; torch computes it in float32 whatever the input's dtype (the
		# mean of squares over/underflows in half precision) and rounds once, at the end.
		return F.rms_norm(x, self.weight.shape, self.weight, self.eps)


def rope_frequencies(head_dim: int, theta: float, device: torch.device | str | None = None) -> torch.Tensor:
	"""theta^(-2k / head_dim) for each pair k, in float32."""
	return 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=device).float() / head_dim))


def rope_rotation(positions: torch.Tensor, frequencies: torch.Tensor) -> torch.Tensor:
	"""RoPE rotation of each position as unit complex numbers, [..., head_dim / 2] (angles in float32).

	positions: [T] (one sequence layout for the batch) or [B, T] (each row at its own positions, as
	the rows of a RowCache are).
	"""
	angles = positions.float()[..., None] * frequencies  # torch.outer's product for [T]
	return torch.polar(torch.ones_like(angles), angles)


def apply_rope(x: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
	"""Rotate adjacent pairs (dims 2k, 2k+1, one complex number) of each head. x: [B, T, H, D]."""
	pairs = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)))
	return torch.view_as_real(pairs * rotation[..., None, :]).flatten(-2).type_as(x)


def release_keys(module: nn.Module, fused: str, parts: dict[str, int]) -> None:
	"""Save `module`'s Linear `fused` as the release's separate Linear weights, and load it from them.

	`parts` maps the release's names to their output widths, in the order the rows are concatenated.
	Released files load unchanged, and our files load in the original code.
	"""
	fused_key = f"{fused}.weight"

	def split(module: nn.Module, state: dict, prefix: str, _metadata: object) -> None:
		# Runs once the module's whole state is in `state`: the keys after the fused one are its own.
		keys = list(state)
		later = keys[keys.index(prefix + fused_key) + 1 :]
		weights = state.pop(prefix + fused_key).split(list(parts.values()))
		for name, weight in zip(parts, weights):
			state[f"{prefix}{name}.weight"] = weight
		for key in later:  # back behind the parts, so the keys come in the release's order
			state[key] = state.pop(key)

	def concatenate(module: nn.Module, state: dict, prefix: str, *_: object) -> None:
		keys = [f"{prefix}{name}.weight" for name in parts]
		if all(key in state for key in keys):  # otherwise load_state_dict reports the fused key missing
			state[prefix + fused_key] = torch.cat([state.pop(key) for key in keys])

	module.register_state_dict_post_hook(split)
	module.register_load_state_dict_pre_hook(concatenate)


class Attention(nn.Module):
	def __init__(self, config: ModelConfig, layer: int) -> None:
		super().__init__()
		self.layer = layer  # this layer's slot in a KVCache
		self.n_heads, self.n_kv_heads, self.head_dim = config.n_heads, config.n_kv_heads, config.head_dim
		self.window = config.window
		# query, key and value in one matmul, in training and generation alike; saved as the release's three
		self.qkv = nn.Linear(config.dim, config.dim + 2 * config.kv_dim, bias=False)
		release_keys(self, "qkv", {"query": config.dim, "key": config.kv_dim, "value": config.kv_dim})
		self.projection = nn.Linear(config.dim, config.dim, bias=False)

	def forward(
		self, x: torch.Tensor, rope: torch.Tensor, backend: str, mask: object = None, cache: KVCache | None = None
	) -> torch.Tensor:
		B, T, _ = x.shape
		qkv = self.qkv(x).view(B, T, self.n_heads + 2 * self.n_kv_heads, self.head_dim)
		qk, v = qkv.split((self.n_heads + self.n_kv_heads, self.n_kv_heads), dim=2)
		q, k = apply_rope(qk, rope).split((self.n_heads, self.n_kv_heads), dim=2)  # one rotation for both
		if cache is None:
			y = attention(q, k, v, self.window, backend, mask)
		else:
			y = cache.attend(self.layer, q, k, v)
		return self.projection(y.reshape(B, T, -1))


class FeedForward(nn.Module):
	"""SwiGLU: linear_3(silu(linear_1(x)) * linear_2(x)), linear_1 and linear_2 in one matmul."""

	def __init__(self, config: ModelConfig) -> None:
		super().__init__()
		self.linear_12 = nn.Linear(config.dim, 2 * config.hidden_dim, bias=False)
		release_keys(self, "linear_12", {"linear_1": config.hidden_dim, "linear_2": config.hidden_dim})
		self.linear_3 = nn.Linear(config.hidden_dim, config.dim, bias=False)

	def forward(self, x: torch.Tensor) -> torch.Tensor:
		gate, up = self.linear_12(x).chunk(2, dim=-1)
		return self.linear_3(F.silu(gate) * up)


class Block(nn.Module):
	def __init__(self, config: ModelConfig, layer: int) -> None:
		super().__init__()
		self.norm_1 = RMSNorm(config.dim, config.norm_eps)
		self.attention = Attention(config, layer)
		self.norm_2 = RMSNorm(config.dim, config.norm_eps)
		self.feed_forward = FeedForward(config)

	def forward(self, x: torch.Tensor, rope, backend, mask=None, cache=None) -> torch.Tensor:
		x = x + self.attention(self.norm_1(x), rope, backend, mask, cache)
		return x + self.feed_forward(self.norm_2(x))


class Transformer(nn.Module):
	def __init__(self, config: ModelConfig) -> None:
		super().__init__()
		self.config = config
		self.backend: str | None = None  # None: pick by device and dtype at each forward
		# Derived from the config, so not saved (persistent=False); a buffer so that it follows .to(device).
		frequencies = rope_frequencies(config.head_dim, config.rope_theta)
		self.register_buffer("rope_frequencies", frequencies, persistent=False)
		self.token_embedding = nn.Embedding(config.vocab_size, config.dim)
		self.blocks = nn.ModuleList([Block(config, layer) for layer in range(config.n_layers)])
		self.final_norm = RMSNorm(config.dim, config.norm_eps)
		self.final_linear = nn.Linear(config.dim, config.vocab_size, bias=False)
		self.tie_weights()
		self.reset_parameters()

	def tie_weights(self) -> None:
		"""Share the output layer with the embedding (both keys stay in the state_dict, as released)."""
		self.final_linear.weight = self.token_embedding.weight

	@torch.no_grad()
	def reset_parameters(self) -> None:
		"""DimensionGPT initialisation: N(0, 0.02), output projections scaled by 1/sqrt(2 * layers)."""
		std = self.config.init_std
		for name, module in self.named_modules():
			if isinstance(module, nn.Linear | nn.Embedding):
				scaled = name.endswith(("attention.projection", "feed_forward.linear_3"))
				module.weight.normal_(0.0, std / math.sqrt(2 * self.config.n_layers) if scaled else std)
			elif isinstance(module, RMSNorm):
				module.weight.fill_(1.0)
		self.tie_weights()  # the loop above initialised the shared matrix twice; the embedding's std holds

	def num_parameters(self) -> int:
		return sum(p.numel() for p in self.parameters())  # the tied matrix counts once

	def _apply(self, fn, recurse=True):  # behind .to(), .cuda(), .half(), .to_empty()
		# RoPE's frequencies are made afresh in float32 where the weights went, rather than converted:
		# .to(bfloat16) would round them and turn the angles of far positions, and on the meta device
		# (load_model builds the model there, then assigns the weights) they hold no numbers to move.
		del self.rope_frequencies
		super()._apply(fn, recurse)
		frequencies = rope_frequencies(self.config.head_dim, self.config.rope_theta, self.token_embedding.weight.device)
		self.register_buffer("rope_frequencies", frequencies, persistent=False)
		return self

	def forward(
		self,
		tokens: torch.Tensor,
		cache: KVCache | None = None,
		padding: torch.Tensor | None = None,
		*,
		select: tuple[torch.Tensor, torch.Tensor] | None = None,
	) -> torch.Tensor:
		"""[B, T] token ids -> [B, T, vocab] logits. T may exceed context_length (positions keep counting).

		With a `cache`, the tokens continue the sequence it holds; `padding` ([B, T], True on real
		tokens) marks left padding of batched prompts and needs a cache. `select` = (rows, columns),
		two [N] index tensors: only the logits of those positions, [N, vocab] (evaluation scores some
		positions of each window; the output layer is the costliest matmul of a small model).
		"""
		T = tokens.shape[1]
		x = self.token_embedding(tokens)
		dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else x.dtype
		backend = self.backend or pick_backend(x.device, dtype)
		mask = None
		if cache is None:
			if padding is not None:
				raise ValueError("padding needs a KVCache (generation path)")
			positions = torch.arange(T, device=tokens.device)
			mask = prepare_mask(backend, T, self.config.window, tokens.device)
		else:
			positions = cache.begin(T, padding)
		rope = rope_rotation(positions, self.rope_frequencies)
		for block in self.blocks:
			x = block(x, rope, backend, mask, cache)
		if cache is not None:
			cache.end()
		if select is not None:
			x = x[select]
		return self.final_linear(self.final_norm(x))

	def make_cache(self, batch_size: int, max_tokens: int | None = None) -> KVCache:
		"""An empty KV cache on this model's device and dtype."""
		weight = self.token_embedding.weight
		return KVCache(self.config, batch_size, weight.device, weight.dtype, max_tokens)
