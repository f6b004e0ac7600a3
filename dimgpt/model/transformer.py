"""The DimensionGPT transformer: pre-norm blocks of grouped-query sliding-window attention and SwiGLU.

Module and parameter names are those of the released weights (`blocks.{i}.attention.query.weight`,
...), so its `state_dict` loads unchanged. No biases; the output layer is tied to the embedding.
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
		# x * rsqrt(mean(x²) + eps) * weight, in float32: the mean of squares over/underflows in half precision.
		if x.dtype == torch.float32:
			if not torch.is_grad_enabled():  # inference: 4 small ops beat rms_norm's CPU decomposition
				return x * torch.rsqrt(x.square().mean(-1, keepdim=True).add_(self.eps)) * self.weight
			return F.rms_norm(x, self.weight.shape, self.weight, self.eps)
		return F.rms_norm(x.float(), self.weight.shape, eps=self.eps).type_as(x) * self.weight


class FusedWeight:
	"""Several Linear weights concatenated along the output dim for one matmul at inference (no grad).

	Built on first use and rebuilt whenever a weight changes (in-place update: its version counter;
	replaced or moved: its storage), so it always computes what the separate layers compute. The
	state_dict keeps the separate weights. Fused optimizers (AdamW(fused=True)) update weights in
	place without bumping their version counter: `Transformer.train()` and the trainer's optimizer
	step therefore clear the copy (`Transformer.clear_inference_cache`).
	"""

	def __init__(self, *layers: nn.Linear) -> None:
		self.layers = layers
		self.key: tuple | None = None
		self.weight: torch.Tensor | None = None

	def __call__(self) -> torch.Tensor:
		key = tuple((w._version, w.data_ptr(), w.dtype, w.device) for w in (layer.weight for layer in self.layers))
		if key != self.key:
			self.weight = torch.cat([layer.weight.detach() for layer in self.layers])
			self.key = key
		return self.weight

	def clear(self) -> None:
		self.key = self.weight = None


def rope_frequencies(head_dim: int, theta: float, device: torch.device | str = "cpu") -> torch.Tensor:
	"""theta^(-2k / head_dim) for each pair k, in float32."""
	return 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=device).float() / head_dim))


def rope_rotation(positions: torch.Tensor, frequencies: torch.Tensor) -> torch.Tensor:
	"""RoPE rotation of each position as unit complex numbers, [T, head_dim / 2] (angles in float32)."""
	angles = torch.outer(positions.float(), frequencies)
	return torch.polar(torch.ones_like(angles), angles)


def apply_rope(x: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
	"""Rotate adjacent pairs (dims 2k, 2k+1, one complex number) of each head. x: [B, T, H, D]."""
	pairs = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)))
	return torch.view_as_real(pairs * rotation[:, None, :]).flatten(-2).type_as(x)


class Attention(nn.Module):
	def __init__(self, config: ModelConfig) -> None:
		super().__init__()
		self.n_heads, self.n_kv_heads, self.head_dim = config.n_heads, config.n_kv_heads, config.head_dim
		self.window = config.window
		self.query = nn.Linear(config.dim, config.dim, bias=False)
		self.key = nn.Linear(config.dim, config.kv_dim, bias=False)
		self.value = nn.Linear(config.dim, config.kv_dim, bias=False)
		self.projection = nn.Linear(config.dim, config.dim, bias=False)
		self.fused = FusedWeight(self.query, self.key, self.value)  # not a Module: no state_dict entry
		self.split = (config.dim, config.kv_dim, config.kv_dim)

	def forward(
		self,
		x: torch.Tensor,
		rope: torch.Tensor,
		backend: str,
		mask: object = None,
		cache: KVCache | None = None,
		layer: int = 0,
	) -> torch.Tensor:
		B, T, _ = x.shape
		if torch.is_grad_enabled():
			q, k, v = self.query(x), self.key(x), self.value(x)
			q = q.view(B, T, self.n_heads, self.head_dim)
			k = k.view(B, T, self.n_kv_heads, self.head_dim)
			q, k = apply_rope(q, rope), apply_rope(k, rope)
		else:  # inference: one matmul for the three projections, one rotation for the query and key heads
			qkv = F.linear(x, self.fused())
			qk = apply_rope(qkv[..., : self.split[0] + self.split[1]].view(B, T, -1, self.head_dim), rope)
			q, k = qk.split((self.n_heads, self.n_kv_heads), dim=2)
			v = qkv[..., self.split[0] + self.split[1] :]
		v = v.reshape(B, T, self.n_kv_heads, self.head_dim)
		if cache is None:
			y = attention(q, k, v, self.window, backend, mask)
		else:
			y = cache.attend(layer, q, k, v)
		return self.projection(y.reshape(B, T, -1))


class FeedForward(nn.Module):
	"""SwiGLU: linear_3(silu(linear_1(x)) * linear_2(x))."""

	def __init__(self, config: ModelConfig) -> None:
		super().__init__()
		self.linear_1 = nn.Linear(config.dim, config.hidden_dim, bias=False)
		self.linear_2 = nn.Linear(config.dim, config.hidden_dim, bias=False)
		self.linear_3 = nn.Linear(config.hidden_dim, config.dim, bias=False)
		self.fused = FusedWeight(self.linear_1, self.linear_2)  # not a Module: no state_dict entry

	def forward(self, x: torch.Tensor) -> torch.Tensor:
		if torch.is_grad_enabled():
			return self.linear_3(F.silu(self.linear_1(x)) * self.linear_2(x))
		gate, up = F.linear(x, self.fused()).chunk(2, dim=-1)  # inference: one matmul for linear_1 and linear_2
		return self.linear_3(F.silu(gate) * up)


class Block(nn.Module):
	def __init__(self, config: ModelConfig) -> None:
		super().__init__()
		self.norm_1 = RMSNorm(config.dim, config.norm_eps)
		self.attention = Attention(config)
		self.norm_2 = RMSNorm(config.dim, config.norm_eps)
		self.feed_forward = FeedForward(config)

	def forward(self, x: torch.Tensor, rope, backend, mask=None, cache=None, layer=0) -> torch.Tensor:
		x = x + self.attention(self.norm_1(x), rope, backend, mask, cache, layer)
		return x + self.feed_forward(self.norm_2(x))


class Transformer(nn.Module):
	def __init__(self, config: ModelConfig) -> None:
		super().__init__()
		self.config = config
		self.backend: str | None = None  # None: pick by device and dtype at each forward
		self._frequencies: torch.Tensor | None = None  # RoPE's, made on first use on the model's device
		self.token_embedding = nn.Embedding(config.vocab_size, config.dim)
		self.blocks = nn.ModuleList([Block(config) for _ in range(config.n_layers)])
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

	def clear_inference_cache(self) -> None:
		"""Drop the concatenated inference weights; the next no-grad forward rebuilds them.

		Needed after an in-place weight update that leaves the version counters as they were (a
		fused optimizer step); `train()` does it too, so a training loop needs nothing more.
		"""
		for module in self.modules():
			if isinstance(module, Attention | FeedForward):
				module.fused.clear()

	def train(self, mode: bool = True) -> Transformer:
		if mode:
			self.clear_inference_cache()
		return super().train(mode)

	def forward(
		self, tokens: torch.Tensor, cache: KVCache | None = None, padding: torch.Tensor | None = None
	) -> torch.Tensor:
		"""[B, T] token ids -> [B, T, vocab] logits. T may exceed context_length (positions keep counting).

		With a `cache`, the tokens continue the sequence it holds; `padding` ([B, T], True on real
		tokens) marks left padding of batched prompts and needs a cache.
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
		if self._frequencies is None or self._frequencies.device != x.device:
			self._frequencies = rope_frequencies(self.config.head_dim, self.config.rope_theta, x.device)
		rope = rope_rotation(positions, self._frequencies)
		for i, block in enumerate(self.blocks):
			x = block(x, rope, backend, mask, cache, i)
		if cache is not None:
			cache.end()
		return self.final_linear(self.final_norm(x))

	def make_cache(self, batch_size: int, max_tokens: int | None = None) -> KVCache:
		"""An empty KV cache on this model's device and dtype."""
		weight = self.token_embedding.weight
		return KVCache(self.config, batch_size, weight.device, weight.dtype, max_tokens)
