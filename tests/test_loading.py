"""Weights loading: our checkpoints, safetensors, DimensionGPT-layout .pt state dicts, and the errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from support import small_config

from dimgpt.config import ModelConfig
from dimgpt.model.loading import infer_config, load_model, save_model
from dimgpt.model.transformer import Transformer

# DimensionGPT layout at tiny dims: head size 64, so the config can be inferred from shapes.
TINY = ModelConfig(vocab_size=120, context_length=512, window=256, dim=128, n_layers=2, n_heads=2, n_kv_heads=1)


def _dimensiongpt_state_dict(config: ModelConfig = TINY, seed: int = 0) -> dict[str, torch.Tensor]:
	"""A state_dict laid out as the released .pt: written by hand, both tied keys sharing one tensor."""
	g = torch.Generator().manual_seed(seed)
	embedding = torch.randn(config.vocab_size, config.dim, generator=g) * 0.02
	state = {"token_embedding.weight": embedding}
	for i in range(config.n_layers):
		shapes = {
			"norm_1.weight": (config.dim,),
			"attention.query.weight": (config.dim, config.dim),
			"attention.key.weight": (config.kv_dim, config.dim),
			"attention.value.weight": (config.kv_dim, config.dim),
			"attention.projection.weight": (config.dim, config.dim),
			"norm_2.weight": (config.dim,),
			"feed_forward.linear_1.weight": (config.hidden_dim, config.dim),
			"feed_forward.linear_2.weight": (config.hidden_dim, config.dim),
			"feed_forward.linear_3.weight": (config.dim, config.hidden_dim),
		}
		for name, shape in shapes.items():
			state[f"blocks.{i}.{name}"] = (
				1 + 0.1 * torch.randn(shape, generator=g) if len(shape) == 1 else 0.02 * torch.randn(shape, generator=g)
			)
	state["final_norm.weight"] = torch.ones(config.dim)
	state["final_linear.weight"] = embedding
	return state


def _logits(model: Transformer) -> torch.Tensor:
	tokens = torch.arange(30).remainder(model.config.vocab_size)[None]
	with torch.no_grad():
		return model(tokens)


def test_raw_dimensiongpt_pt_loads_with_inferred_config(tmp_path: Path):
	state = _dimensiongpt_state_dict()
	torch.save(state, tmp_path / "DimensionGPT-0.2B-Chat.pt")
	model = load_model(tmp_path / "DimensionGPT-0.2B-Chat.pt", vocab_size=TINY.vocab_size)
	assert model.config == TINY
	assert model.final_linear.weight is model.token_embedding.weight
	for key, value in model.state_dict().items():
		assert torch.equal(value, state[key]), key
	# The same weights through our own module give the same logits.
	reference = Transformer(TINY).eval()
	reference.load_state_dict(state)
	assert torch.equal(_logits(model), _logits(reference))


def test_inferred_config_of_the_release_shapes():
	with torch.device("meta"):
		state = Transformer(ModelConfig()).state_dict()
	assert infer_config(state) == ModelConfig()


def test_checkpoint_directory_round_trip(tmp_path: Path):
	config = ModelConfig(vocab_size=50, context_length=32, window=4, dim=48, n_layers=2, n_heads=3, n_kv_heads=1)
	model = Transformer(config).eval()
	save_model(model, tmp_path / "last")
	assert {p.name for p in (tmp_path / "last").iterdir()} == {"model.safetensors", "model.json"}
	loaded = load_model(tmp_path / "last")
	assert loaded.config == config
	assert torch.equal(_logits(loaded), _logits(model))
	# A run directory gives its best checkpoint, else its last.
	save_model(model, tmp_path / "run" / "checkpoints" / "last")
	assert torch.equal(_logits(load_model(tmp_path / "run")), _logits(model))
	# The .safetensors file alone carries its config in its metadata.
	alone = tmp_path / "alone.safetensors"
	(tmp_path / "last" / "model.safetensors").rename(alone)
	assert load_model(alone).config == config


def test_plain_safetensors_file(tmp_path: Path):
	state = _dimensiongpt_state_dict()
	del state["final_linear.weight"]  # safetensors cannot hold two names of one tensor
	save_file(state, str(tmp_path / "weights.safetensors"))
	model = load_model(tmp_path / "weights.safetensors")
	assert model.config == TINY
	assert torch.equal(model.token_embedding.weight, state["token_embedding.weight"])


def test_explicit_config_overrides_inference(tmp_path: Path):
	torch.save(_dimensiongpt_state_dict(), tmp_path / "w.pt")
	config = small_config(vocab_size=120, context_length=64, window=8, dim=128)  # heads of 32, not the inferred 64
	assert load_model(tmp_path / "w.pt", config=config).config == config


def test_wrong_vocab_size_names_file_and_both_sizes(tmp_path: Path):
	torch.save(_dimensiongpt_state_dict(), tmp_path / "w.pt")
	with pytest.raises(ValueError, match=r"121 tokens but the model has a vocabulary of 120: .*w\.pt"):
		load_model(tmp_path / "w.pt", vocab_size=121)
	assert load_model(tmp_path / "w.pt", vocab_size=119).config.vocab_size == 120  # spare slots are fine


def test_truncated_files(tmp_path: Path):
	torch.save(_dimensiongpt_state_dict(), tmp_path / "w.pt")
	data = (tmp_path / "w.pt").read_bytes()
	(tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
	with pytest.raises(ValueError, match=r"cut\.pt.*truncated or corrupt"):
		load_model(tmp_path / "cut.pt")
	save_model(Transformer(TINY), tmp_path / "ck")
	data = (tmp_path / "ck" / "model.safetensors").read_bytes()
	(tmp_path / "ck" / "model.safetensors").write_bytes(data[: len(data) - 1000])
	with pytest.raises(ValueError, match=r"model\.safetensors.*truncated or corrupt"):
		load_model(tmp_path / "ck")


def test_missing_and_unexpected_keys(tmp_path: Path):
	state = _dimensiongpt_state_dict()
	del state["blocks.1.attention.value.weight"]
	state["blocks.1.attention.value.bias"] = torch.zeros(64)
	torch.save(state, tmp_path / "w.pt")
	with pytest.raises(
		ValueError,
		match=r"w\.pt.*missing: blocks\.1\.attention\.value\.weight.*unexpected: blocks\.1\.attention\.value\.bias",
	):
		load_model(tmp_path / "w.pt")


def test_wrong_shape_names_key_and_both_shapes(tmp_path: Path):
	state = _dimensiongpt_state_dict()
	state["blocks.0.feed_forward.linear_2.weight"] = torch.zeros(300, 128)
	torch.save(state, tmp_path / "w.pt")
	with pytest.raises(
		ValueError, match=r"w\.pt.*blocks\.0\.feed_forward\.linear_2\.weight.*\(300, 128\).*\(341, 128\)"
	):
		load_model(tmp_path / "w.pt")


def test_missing_file_and_not_a_state_dict(tmp_path: Path):
	with pytest.raises(FileNotFoundError, match=r"DimensionGPT-0\.2B-Chat\.pt"):
		load_model(tmp_path / "nothing.pt")
	torch.save([1, 2, 3], tmp_path / "list.pt")
	with pytest.raises(ValueError, match=r"list\.pt: not a DimensionGPT state dict or checkpoint"):
		load_model(tmp_path / "list.pt")


def test_prefixed_keys_of_compiled_models_load(tmp_path: Path):
	state = {"_orig_mod." + k: v for k, v in _dimensiongpt_state_dict().items()}
	torch.save(state, tmp_path / "w.pt")
	assert load_model(tmp_path / "w.pt").config == TINY


def test_saves_are_byte_reproducible(tmp_path: Path):
	# safetensors orders the metadata keys by a hash seeded anew for each save: 8 saves, 1 set of bytes.
	model = Transformer(TINY)
	saves = set()
	for i in range(8):
		save_model(model, tmp_path / str(i))
		saves.add((tmp_path / str(i) / "model.safetensors").read_bytes())
	assert len(saves) == 1
	assert not list(tmp_path.rglob("*.tmp"))
	loaded = load_model(tmp_path / "0")
	assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
