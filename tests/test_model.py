"""The transformer: DimensionGPT names, sizes, initialisation and maths; the KV cache against full recomputation."""

from __future__ import annotations

import math

import pytest
import torch
from support import small_config

from dimgpt.config import ModelConfig
from dimgpt.model.attention import reference_attention
from dimgpt.model.transformer import Transformer
from dimgpt.presets import get_preset

# A sequence of 48 tokens sees past the window of 8; an odd vocabulary size.
SMALL = small_config(vocab_size=97, context_length=48, window=8, n_layers=3)


def _model(config: ModelConfig = SMALL, seed: int = 0) -> Transformer:
	torch.manual_seed(seed)
	return Transformer(config).eval()


def test_dimensiongpt_parameter_count_and_keys():
	with torch.device("meta"):
		model = Transformer(get_preset("dimensiongpt-0.2b").model)
	assert model.num_parameters() == 208_929_792
	block = [
		"norm_1.weight",
		"attention.query.weight",
		"attention.key.weight",
		"attention.value.weight",
		"attention.projection.weight",
		"norm_2.weight",
		"feed_forward.linear_1.weight",
		"feed_forward.linear_2.weight",
		"feed_forward.linear_3.weight",
	]
	expected = ["token_embedding.weight"]
	expected += [f"blocks.{i}.{name}" for i in range(16) for name in block]
	expected += ["final_norm.weight", "final_linear.weight"]
	state = model.state_dict()
	assert sorted(state) == sorted(expected)
	assert tuple(state["blocks.0.attention.key.weight"].shape) == (256, 1024)
	assert tuple(state["blocks.0.feed_forward.linear_1.weight"].shape) == (2730, 1024)


def test_tied_output_layer_and_no_biases():
	model = _model()
	assert model.final_linear.weight is model.token_embedding.weight
	assert all(not name.endswith("bias") for name, _ in model.named_parameters())


def test_initialisation_statistics():
	config = ModelConfig(vocab_size=4096, dim=256, n_layers=8, n_heads=4, n_kv_heads=2)
	model = _model(config)
	scaled = 0.02 / math.sqrt(2 * 8)
	for name, p in model.named_parameters():
		if name.endswith("norm_1.weight") or "norm" in name:
			assert torch.all(p == 1)
		elif name.endswith(("attention.projection.weight", "feed_forward.linear_3.weight")):
			assert abs(p.std().item() - scaled) < 0.1 * scaled, name
		else:
			assert abs(p.std().item() - 0.02) < 0.002, name
		if p.ndim == 2:
			assert abs(p.mean().item()) < 0.002, name


def _reference_forward(model: Transformer, tokens: torch.Tensor) -> torch.Tensor:
	"""The maths of docs/dimensiongpt.md ("Model maths") written out in float64, RoPE through complex numbers, independent of the module code."""
	c = model.config
	w = {k: v.double() for k, v in model.state_dict().items()}

	def rms(x, weight):
		return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + c.norm_eps) * weight

	T = tokens.shape[1]
	freqs = 1.0 / c.rope_theta ** (torch.arange(0, c.head_dim, 2).double() / c.head_dim)
	rotation = torch.polar(
		torch.ones(T, c.head_dim // 2, dtype=torch.float64), torch.outer(torch.arange(T).double(), freqs)
	)

	def rope(x):
		z = torch.view_as_complex(x.reshape(*x.shape[:-1], -1, 2).contiguous())
		return torch.view_as_real(z * rotation[:, None, :]).flatten(-2)

	x = w["token_embedding.weight"][tokens]
	B = x.shape[0]
	for i in range(c.n_layers):
		p = f"blocks.{i}."
		h = rms(x, w[p + "norm_1.weight"])
		q = rope((h @ w[p + "attention.query.weight"].T).view(B, T, c.n_heads, c.head_dim))
		k = rope((h @ w[p + "attention.key.weight"].T).view(B, T, c.n_kv_heads, c.head_dim))
		v = (h @ w[p + "attention.value.weight"].T).view(B, T, c.n_kv_heads, c.head_dim)
		y = reference_attention(q, k, v, c.window).reshape(B, T, c.dim)
		x = x + y @ w[p + "attention.projection.weight"].T
		h = rms(x, w[p + "norm_2.weight"])
		gate = torch.nn.functional.silu(h @ w[p + "feed_forward.linear_1.weight"].T)
		x = x + (gate * (h @ w[p + "feed_forward.linear_2.weight"].T)) @ w[p + "feed_forward.linear_3.weight"].T
	return rms(x, w["final_norm.weight"]) @ w["token_embedding.weight"].T


@pytest.mark.parametrize("T", [5, 9, 40])  # inside the window, just past it, far past it
def test_forward_matches_float64_reference(T):
	model = _model()
	for p in model.parameters():  # larger weights so that every sub-layer moves the result
		p.data.mul_(5)
	tokens = torch.randint(0, SMALL.vocab_size, (2, T), generator=torch.Generator().manual_seed(T))
	with torch.no_grad():
		out = model(tokens)
	ref = _reference_forward(model, tokens)
	assert ((out.double() - ref).norm() / ref.norm()).item() <= 1e-5


@pytest.mark.slow  # FlexAttention's first use on CPU takes seconds; the fast lane has test_attention's flex check
def test_forced_flex_backend_gives_the_sdpa_logits():
	"""The whole model through FlexAttention (eager on CPU), the backend picked on CUDA without flash-attn."""
	import warnings

	model = _model()
	tokens = torch.randint(0, SMALL.vocab_size, (2, 30), generator=torch.Generator().manual_seed(5))
	with torch.no_grad(), warnings.catch_warnings():
		warnings.simplefilter("ignore", UserWarning)
		sdpa = model(tokens)
		model.backend = "flex"
		flex = model(tokens)
	torch.testing.assert_close(flex, sdpa, rtol=1e-5, atol=1e-5)


def test_window_limits_what_a_token_sees():
	"""Changing a token more than layers * window back cannot change the logits; one inside can."""
	model = _model()
	tokens = torch.randint(0, SMALL.vocab_size, (1, 40), generator=torch.Generator().manual_seed(3))
	far, near = tokens.clone(), tokens.clone()
	far[0, 39 - SMALL.n_layers * SMALL.window - 1] += 1
	near[0, 39 - SMALL.n_layers * SMALL.window] += 1
	with torch.no_grad():
		base, f, n = (model(t)[0, -1] for t in (tokens, far, near))
	assert torch.equal(base, f)
	assert not torch.allclose(base, n)


def _cached_logits(model: Transformer, tokens: torch.Tensor, prefill: int, **cache_args) -> torch.Tensor:
	cache = model.make_cache(tokens.shape[0], **cache_args)
	with torch.no_grad():
		steps = [model(tokens[:, :prefill], cache)]
		steps += [model(tokens[:, t : t + 1], cache) for t in range(prefill, tokens.shape[1])]
	return torch.cat(steps, dim=1)


@pytest.mark.slow  # a full recomputation per step
@pytest.mark.parametrize("prefill", [1, 5, 20])
def test_kv_cache_equals_full_recomputation_at_every_step(prefill):
	"""Past the window (8) and past the context length (48): positions keep counting, buffers roll."""
	model = _model()
	tokens = torch.randint(0, SMALL.vocab_size, (2, 70), generator=torch.Generator().manual_seed(prefill))
	with torch.no_grad():
		full = model(tokens)
	cached = _cached_logits(model, tokens, prefill)
	torch.testing.assert_close(cached, full, rtol=1e-5, atol=1e-5)
	assert torch.equal(cached.argmax(-1), full.argmax(-1))


def test_kv_cache_chunks_longer_than_the_buffer():
	model = _model()
	tokens = torch.randint(0, SMALL.vocab_size, (1, 60), generator=torch.Generator().manual_seed(7))
	cache = model.make_cache(1)
	with torch.no_grad():
		full = model(tokens)
		chunks = [model(tokens[:, a:b], cache) for a, b in ((0, 3), (3, 25), (25, 26), (26, 60))]
	torch.testing.assert_close(torch.cat(chunks, dim=1), full, rtol=1e-5, atol=1e-5)


def test_kv_cache_memory_is_bounded_by_the_window():
	model = _model()
	cache = model.make_cache(1)
	before = cache.memory_bytes()
	with torch.no_grad():
		model(torch.zeros(1, 1, dtype=torch.long), cache)
		for _ in range(100):
			model(torch.zeros(1, 1, dtype=torch.long), cache)
	assert cache.memory_bytes() == before
	assert cache.keys[0].shape[2] == SMALL.window + 1


def test_left_padded_batch_matches_single_prompts():
	model = _model()
	g = torch.Generator().manual_seed(11)
	a = torch.randint(10, SMALL.vocab_size, (1, 30), generator=g)
	b = torch.randint(10, SMALL.vocab_size, (1, 18), generator=g)
	batch = torch.cat([a, torch.cat([torch.ones(1, 12, dtype=torch.long), b], dim=1)])
	padding = torch.ones(2, 30, dtype=torch.bool)
	padding[1, :12] = False
	cache = model.make_cache(2)
	with torch.no_grad():
		first = model(batch, cache, padding)
		steps = [model(batch[:, -1:], cache) for _ in range(15)]
		full_a = model(torch.cat([a] + [a[:, -1:]] * 15, dim=1))
		full_b = model(torch.cat([b] + [b[:, -1:]] * 15, dim=1))
	torch.testing.assert_close(first[0], full_a[0, :30], rtol=1e-5, atol=1e-5)
	torch.testing.assert_close(first[1, 12:], full_b[0, :18], rtol=1e-5, atol=1e-5)
	torch.testing.assert_close(torch.cat(steps, 1)[0], full_a[0, 30:], rtol=1e-5, atol=1e-5)
	torch.testing.assert_close(torch.cat(steps, 1)[1], full_b[0, 18:], rtol=1e-5, atol=1e-5)


def test_select_gives_the_full_logits_of_those_positions_only():
	"""Each prompt's last position, right-padded in a cache (as the server's prefill) and without one."""
	model = _model()
	tokens = torch.randint(0, SMALL.vocab_size, (3, 20), generator=torch.Generator().manual_seed(5))
	rows, last = torch.arange(3), torch.tensor([19, 6, 11])
	with torch.no_grad():
		full = model(tokens)
		cached = model(tokens, model.make_cache(3), select=(rows, last))
		plain = model(tokens, select=(rows, last))
	assert cached.shape == plain.shape == (3, SMALL.vocab_size)
	torch.testing.assert_close(cached, full[rows, last], rtol=1e-5, atol=1e-5)
	torch.testing.assert_close(plain, full[rows, last], rtol=1e-5, atol=1e-5)


def test_eval_after_a_fused_optimizer_step_uses_the_new_weights() -> None:
	# AdamW(fused=True) updates the weights in place without bumping their version counters: nothing
	# derived from the weights may outlive a step (the model keeps no copy of them to go stale).
	model = _model()
	tokens = torch.randint(0, SMALL.vocab_size, (2, 16), generator=torch.Generator().manual_seed(1))
	with torch.no_grad():
		before = model(tokens)
	model.train()
	model(tokens).logsumexp(-1).mean().backward()
	optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, fused=True)
	versions = [p._version for p in model.parameters()]
	optimizer.step()
	assert [p._version for p in model.parameters()] == versions
	model.eval()
	fresh = _model(seed=1)
	fresh.load_state_dict(model.state_dict())
	with torch.no_grad():
		after = model(tokens)
		torch.testing.assert_close(after, fresh(tokens))
	assert not torch.allclose(after, before)


def test_state_dict_speaks_the_release_layout_both_ways() -> None:
	"""Fused projections inside; the release's separate keys, in its order, out and in."""
	model = _model()
	state = model.state_dict()
	block = ["norm_1", "attention.query", "attention.key", "attention.value", "attention.projection"]
	block += ["norm_2", "feed_forward.linear_1", "feed_forward.linear_2", "feed_forward.linear_3"]
	expected = ["token_embedding.weight"]
	expected += [f"blocks.{i}.{name}.weight" for i in range(SMALL.n_layers) for name in block]
	expected += ["final_norm.weight", "final_linear.weight"]
	assert list(state) == expected  # the rope frequencies are a buffer, not saved
	attention = model.blocks[1].attention
	q, k, v = (state[f"blocks.1.attention.{name}.weight"] for name in ("query", "key", "value"))
	assert torch.equal(torch.cat([q, k, v]), attention.qkv.weight)
	# A state_dict written as the release lays it out (separate tensors, new values) loads into the fusion.
	released = {key: torch.randn_like(value) for key, value in state.items()}
	released["final_linear.weight"] = released["token_embedding.weight"]
	other = _model(seed=1)
	other.load_state_dict(released)
	ffn = other.blocks[2].feed_forward.linear_12.weight
	assert torch.equal(ffn[: SMALL.hidden_dim], released["blocks.2.feed_forward.linear_1.weight"])
	assert torch.equal(ffn[SMALL.hidden_dim :], released["blocks.2.feed_forward.linear_2.weight"])
	for key, value in other.state_dict().items():
		assert torch.equal(value, released[key]), key
	with pytest.raises(RuntimeError, match=r"Missing key.*blocks\.0\.attention\.qkv\.weight"):
		other.load_state_dict({k: v for k, v in released.items() if k != "blocks.0.attention.key.weight"})


def test_layer_index_and_rope_table_are_set_at_construction() -> None:
	model = _model()
	assert [block.attention.layer for block in model.blocks] == list(range(SMALL.n_layers))
	assert "rope_frequencies" not in model.state_dict()
	expected = 1.0 / SMALL.rope_theta ** (torch.arange(0, SMALL.head_dim, 2).double() / SMALL.head_dim)
	torch.testing.assert_close(model.rope_frequencies.double(), expected)
	# Cast to bfloat16, the weights round but the frequencies stay float32: bfloat16 frequencies would
	# turn a far position by a wrong angle (an error of about 0.4 % of the angle).
	model.to(torch.bfloat16)
	assert model.blocks[0].attention.qkv.weight.dtype == torch.bfloat16
	assert model.rope_frequencies.dtype == torch.float32
	torch.testing.assert_close(model.rope_frequencies.double(), expected)
	with torch.device("meta"):  # as load_model builds it before assigning the weights
		empty = Transformer(SMALL)
	empty.load_state_dict(_model().state_dict(), assign=True)
	empty.tie_weights()
	empty.to("cpu")
	torch.testing.assert_close(empty.rope_frequencies.double(), expected)
