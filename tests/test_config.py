import json

import pytest

from dimgpt.config import (
	PRESETS,
	ModelConfig,
	Preset,
	SourceConfig,
	from_dict,
	get_preset,
	load_json,
	save_json,
	to_dict,
)


def test_dimensiongpt_parameter_count():
	config = get_preset("dimensiongpt-0.2b").model
	assert config.hidden_dim == 2730
	assert config.head_dim == 64
	assert config.num_parameters() == 208_929_792


def test_dimensiongpt_recipe_numbers():
	preset = get_preset("dimensiongpt-0.2b")
	train, data = preset.train, preset.data
	assert train.batch_size * train.grad_accum * preset.model.context_length == 524_288
	assert (train.lr, train.min_lr, train.warmup_steps, train.decay_steps) == (6e-4, 6e-5, 2_000, 100_000)
	assert (train.beta1, train.beta2, train.eps, train.weight_decay, train.grad_clip) == (0.9, 0.95, 1e-5, 0.1, 1.0)
	assert (data.vocab_size, data.tokenizer_chars, data.min_document_chars) == (32_000, 300_000_000, 64)
	assert data.validation_fraction == 0.001


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_json_round_trip(name, tmp_path):
	preset = get_preset(name)
	path = tmp_path / "preset.json"
	save_json(preset, path)
	assert load_json(Preset, path) == preset
	# JSON really is plain data
	assert json.loads(path.read_text())["model"]["dim"] == preset.model.dim


def test_nested_sources_round_trip():
	preset = get_preset("tiny")
	sources = (SourceConfig(name="a", kind="files", path="x/*.jsonl", multiplier=2.0),)
	data = type(preset.data)(sources=sources)
	assert from_dict(type(data), json.loads(json.dumps(to_dict(data)))) == data


def test_invalid_model_config_names_the_problem():
	with pytest.raises(ValueError, match="n_kv_heads"):
		ModelConfig(n_heads=16, n_kv_heads=5)
	with pytest.raises(ValueError, match="unknown preset"):
		get_preset("nope")


def test_unknown_json_field_is_an_error(tmp_path):
	path = tmp_path / "model.json"
	path.write_text(json.dumps({"dim": 64, "colour": "red"}))
	with pytest.raises(ValueError, match=r"model\.json.*colour"):
		load_json(ModelConfig, path)


def test_tiny_model_is_small():
	assert get_preset("tiny").model.num_parameters() < 2_000_000
