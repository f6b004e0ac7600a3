"""Every attention backend against the float64 reference: windows below and above the length, GQA 1/2/4."""

from __future__ import annotations

import warnings

import pytest
import torch

from dimgpt.model.attention import (
	attention,
	decode_attention,
	flash_attn_available,
	flex_available,
	pick_backend,
	reference_attention,
	window_mask,
)

CASES = [(window, groups) for window in (0, 5, 31, 40, 1000) for groups in (1, 2, 4)]
T, HEADS, HEAD_DIM = 40, 4, 16


def _qkv(groups: int, device: str = "cpu", dtype: torch.dtype = torch.float32, seed: int = 0):
	g = torch.Generator().manual_seed(seed)
	q = torch.randn(2, T, HEADS, HEAD_DIM, generator=g)
	k = torch.randn(2, T, HEADS // groups, HEAD_DIM, generator=g)
	v = torch.randn(2, T, HEADS // groups, HEAD_DIM, generator=g)
	return (x.to(device, dtype) for x in (q, k, v))


def _relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
	return ((out.double().cpu() - ref.cpu()).norm() / ref.norm()).item()


def test_reference_is_the_definition():
	"""The reference itself: query i gets exactly the softmax-weighted mean of keys i-window..i."""
	q, k, v = _qkv(2)
	window = 3
	out = reference_attention(q, k, v, window)
	i, h = 17, 3  # head 3 uses key head 1 when 2 query heads share a key head
	keys = k[0, i - window : i + 1, h // 2].double()
	weights = (keys @ q[0, i, h].double() / HEAD_DIM**0.5).softmax(0)
	assert torch.allclose(out[0, i, h], weights @ v[0, i - window : i + 1, h // 2].double())
	# Query 0 sees only itself.
	assert torch.allclose(out[0, 0, 0], v[0, 0, 0].double())


@pytest.mark.parametrize(("window", "groups"), CASES)
def test_sdpa_matches_reference(window, groups):
	q, k, v = _qkv(groups)
	assert _relative_error(attention(q, k, v, window, "sdpa"), reference_attention(q, k, v, window)) <= 1e-5


@pytest.mark.skipif(not flex_available(), reason="FlexAttention is not in this PyTorch")
@pytest.mark.parametrize(("window", "groups"), CASES)
def test_flex_matches_reference_on_cpu(window, groups):
	"""FlexAttention runs (unfused, eagerly) on CPU: the same block-mask code as on CUDA is verified here."""
	q, k, v = _qkv(groups)
	with warnings.catch_warnings():
		warnings.simplefilter("ignore", UserWarning)
		out = attention(q, k, v, window, "flex")
	assert _relative_error(out, reference_attention(q, k, v, window)) <= 1e-5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("backend", ["sdpa", "flex", "flash_attn"])
@pytest.mark.parametrize(("window", "groups"), CASES)
def test_cuda_backends_match_reference(backend, window, groups):
	if backend == "flash_attn" and not flash_attn_available():
		pytest.skip("flash-attn is not installed")
	dtype = torch.bfloat16 if backend == "flash_attn" else torch.float32
	q, k, v = _qkv(groups, "cuda", dtype)
	out = attention(q, k, v, window, backend)
	ref = reference_attention(q.float(), k.float(), v.float(), window)
	# float32 kernels on CUDA may use TF32 matmuls; bfloat16 has 8 bits of mantissa.
	assert _relative_error(out, ref) <= (2e-2 if dtype == torch.bfloat16 else 1e-3)


def test_decode_attention_matches_reference_for_any_key_order():
	"""The cache path: one new query against keys stored in rolling-buffer order, under a key mask."""
	window, groups = 6, 2
	q, k, v = _qkv(groups)
	ref = reference_attention(q, k, v, window)
	i = 30
	order = torch.randperm(window + 1, generator=torch.Generator().manual_seed(1))
	keys = k[:, i - window : i + 1][:, order].transpose(1, 2)
	values = v[:, i - window : i + 1][:, order].transpose(1, 2)
	out = decode_attention(q[:, i : i + 1], keys, values, None)
	assert _relative_error(out[:, 0], ref[:, i]) <= 1e-5
	# Several queries at once, with the mask of positions.
	positions = torch.arange(i - window, i + 1)[order]
	queries = torch.arange(i - 2, i + 1)
	mask = window_mask(queries, positions, window)[None, None] & (positions <= i)[None, None, None]
	out = decode_attention(q[:, i - 2 : i + 1], keys, values, mask.expand(2, 1, 3, window + 1))
	assert _relative_error(out[:, -1], ref[:, i]) <= 1e-5


def test_pick_backend():
	assert pick_backend("cpu") == "sdpa"
	assert pick_backend("cpu", torch.bfloat16) == "sdpa"
	if torch.cuda.is_available():
		expected = "flash_attn" if flash_attn_available() else "flex"
		assert pick_backend("cuda", torch.bfloat16) == expected
		assert pick_backend("cuda", torch.float32) == "flex"
