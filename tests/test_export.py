"""Export to `transformers`: the exported MistralForCausalLM computes what our model computes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dimgpt.config import ModelConfig
from dimgpt.export import END_OF_TEXT, export_hf, hf_config, hf_state_dict
from dimgpt.model.transformer import Transformer

transformers = pytest.importorskip("transformers")

# Several layers, GQA ratio 2, a window (6) well below the test sequences (40 tokens).
CONFIG = ModelConfig(vocab_size=256, context_length=64, window=6, dim=64, n_layers=3, n_heads=4, n_kv_heads=2)


def randomize(model: Transformer, seed: int = 0) -> Transformer:
	"""Weights far from the init (norm weights too), so that a swapped or misplaced tensor shows in the logits."""
	generator = torch.Generator().manual_seed(seed)
	with torch.no_grad():
		for parameter in model.parameters():  # the tied embedding comes once
			noise = torch.randn(parameter.shape, generator=generator)
			if parameter.dim() == 1:
				parameter.copy_(1 + 0.3 * noise)
			else:
				parameter.copy_(2 * noise / parameter.shape[1] ** 0.5)
	return model.eval()


def load_hf(directory: Path, attn_implementation: str = "sdpa") -> torch.nn.Module:
	model = transformers.MistralForCausalLM.from_pretrained(
		directory, attn_implementation=attn_implementation, dtype=torch.float32
	)
	return model.eval()


def greedy(model: Transformer, prompt: list[int], new_tokens: int) -> list[int]:
	"""Greedy continuation with our model: argmax over a full forward at each step, stop at end-of-text."""
	tokens = list(prompt)
	with torch.no_grad():
		for _ in range(new_tokens):
			token = int(model(torch.tensor([tokens]))[0, -1].argmax())
			tokens.append(token)
			if token == END_OF_TEXT:
				break
	return tokens[len(prompt) :]


def hf_greedy(model: torch.nn.Module, prompt: list[int], new_tokens: int) -> list[int]:
	with torch.no_grad():
		out = model.generate(torch.tensor([prompt]), max_new_tokens=new_tokens, do_sample=False)
	return out[0, len(prompt) :].tolist()


def max_logit_difference(ours: Transformer, theirs: torch.nn.Module, tokens: torch.Tensor) -> float:
	with torch.no_grad():
		return float((ours(tokens) - theirs(tokens).logits).abs().max())


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Transformer, Path]:
	model = randomize(Transformer(CONFIG))
	out = export_hf(model, tmp_path_factory.mktemp("hf"))
	return model, out


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_logits_match(exported: tuple[Transformer, Path], attn_implementation: str) -> None:
	ours, directory = exported
	theirs = load_hf(directory, attn_implementation)
	tokens = torch.randint(0, CONFIG.vocab_size, (3, 40), generator=torch.Generator().manual_seed(1))
	difference = max_logit_difference(ours, theirs, tokens)
	print(f"max |logits ours - transformers ({attn_implementation})| = {difference:.2e}")
	assert difference < 1e-4


def test_files_and_config(exported: tuple[Transformer, Path]) -> None:
	_, directory = exported
	assert {"config.json", "generation_config.json", "model.safetensors"} <= {p.name for p in directory.iterdir()}
	config = transformers.AutoConfig.from_pretrained(directory)
	assert config.model_type == "mistral"
	assert config.sliding_window == CONFIG.window + 1
	assert config.num_key_value_heads == CONFIG.n_kv_heads
	assert config.tie_word_embeddings
	model = load_hf(directory)
	assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()


def test_greedy_generation_matches(exported: tuple[Transformer, Path]) -> None:
	ours, directory = exported
	theirs = load_hf(directory)
	prompt = [2, 17, 200, 45, 99]
	# 30 new tokens run far past the window (6): transformers' sliding KV cache must drop what ours masks.
	expected = greedy(ours, prompt, 30)
	assert hf_greedy(theirs, prompt, 30) == expected


@pytest.mark.parametrize("mistake", ["no RoPE permutation", "sliding_window = window"])
def test_the_comparison_catches_mistakes(exported: tuple[Transformer, Path], mistake: str) -> None:
	"""The two facts the export must honour: without either, the logits differ by far more than 1e-4."""
	ours, _ = exported
	config = hf_config(CONFIG)
	tensors = hf_state_dict(ours.state_dict(), CONFIG)
	if mistake == "no RoPE permutation":
		for i, block in enumerate(ours.blocks):
			tensors[f"model.layers.{i}.self_attn.q_proj.weight"] = block.attention.query.weight
			tensors[f"model.layers.{i}.self_attn.k_proj.weight"] = block.attention.key.weight
	else:
		config["sliding_window"] = CONFIG.window
	config = {k: v for k, v in config.items() if k not in ("architectures", "model_type", "torch_dtype")}
	theirs = transformers.MistralForCausalLM(transformers.MistralConfig(**config)).eval()
	theirs.load_state_dict(tensors, strict=False)
	theirs.tie_weights()
	tokens = torch.randint(0, CONFIG.vocab_size, (2, 40), generator=torch.Generator().manual_seed(2))
	assert max_logit_difference(ours, theirs, tokens) > 1e-2


def test_untied_output_layer_is_exported(tmp_path: Path) -> None:
	model = randomize(Transformer(CONFIG))
	model.final_linear.weight = torch.nn.Parameter(torch.randn(CONFIG.vocab_size, CONFIG.dim) / 8)
	directory = export_hf(model, tmp_path)
	assert not json.loads((directory / "config.json").read_text())["tie_word_embeddings"]
	tokens = torch.randint(0, CONFIG.vocab_size, (2, 20), generator=torch.Generator().manual_seed(3))
	assert max_logit_difference(model, load_hf(directory), tokens) < 1e-4
