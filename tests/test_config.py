import json

import pytest

from dimgpt.config import ModelConfig, Preset, SourceConfig, from_dict, load_json, save_json, to_dict
from dimgpt.presets import PRESETS, get_preset


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


def test_config_module_reads_no_file():
	# the schema describes; the catalogue (dimgpt.presets) reads the shipped resources
	import ast
	import inspect

	import dimgpt.config

	tree = ast.parse(inspect.getsource(dimgpt.config))
	calls = {n.func.attr for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)}
	assert "read_text" in calls  # load_json, called explicitly
	factories = [
		kw.value
		for n in ast.walk(tree)
		if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "field"
		for kw in n.keywords
		if kw.arg == "default_factory"
	]
	assert factories == []  # no default computed by a function (the preprompt file was read in one)


def test_main_job_budgets_are_on_the_preset():
	tiny, big = get_preset("tiny"), get_preset("dimensiongpt-0.2b")
	assert (tiny.job_pretrain_seconds, tiny.job_finetune_seconds) == (300, 120)
	assert (big.job_pretrain_seconds, big.job_finetune_seconds) == (None, None)  # its step budget alone
