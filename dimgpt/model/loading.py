"""Save and load model weights: our checkpoints, safetensors files, released DimensionGPT `.pt` state dicts.

`save_model(model, directory)` writes `model.safetensors` (the config JSON also sits in its metadata)
and `model.json`; a checkpoint holds the weights file alone (`save_weights`), its configs being in
the run's recipe. `load_model(path)` takes such a directory, a run directory (its checkpoint, as
`dimgpt.runs.checkpoint` chooses), a `.safetensors` file, or a raw `state_dict` saved with
`torch.save` (the released `DimensionGPT-0.2B.pt` / `-Chat.pt`), always read with `weights_only=True`.

Config, first found: the `config` argument, `model.json` next to the weights, the safetensors
metadata, else inferred from the tensor shapes. Shapes give the vocabulary size, dim, layer count,
key/value width and feed-forward width, not the head count: inference assumes DimensionGPT's head
size of 64 (n_heads = dim / 64, n_kv_heads = kv_dim / 64) and its context 512 / window 256. Pass a
`ModelConfig` when the weights were trained otherwise.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from dimgpt import runs
from dimgpt.config import ModelConfig, from_dict, load_json, save_json, to_dict
from dimgpt.errors import BadFileError
from dimgpt.model.transformer import Transformer

WEIGHTS_FILE = runs.WEIGHTS_FILE
CONFIG_FILE = runs.MODEL_CONFIG_FILE
TIED_KEY = "final_linear.weight"  # same matrix as token_embedding.weight; stored once in safetensors
# A model.json must state these (a missing one would silently take the 0.2B model's default).
SHAPE_FIELDS = ("vocab_size", "context_length", "window", "dim", "n_layers", "n_heads", "n_kv_heads")
INFERRED_HEAD_DIM = 64
INFERRED_CONTEXT = 512
INFERRED_WINDOW = 256


def save_model(model: Transformer, directory: str | Path) -> None:
	"""Write directory/model.safetensors and directory/model.json (the ModelConfig): weights saved alone."""
	directory = Path(directory)
	directory.mkdir(parents=True, exist_ok=True)
	save_weights(model, directory / WEIGHTS_FILE)
	save_json(model.config, directory / CONFIG_FILE)


def save_weights(model: Transformer, path: str | Path) -> None:
	"""Write the weights to a .safetensors file whose header also holds the ModelConfig (it loads alone)."""
	state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if k != TIED_KEY}
	metadata = {"format": "pt", "dimgpt_model_config": json.dumps(to_dict(model.config))}
	write_safetensors(state, path, metadata)


def write_safetensors(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str]) -> None:
	"""Write a .safetensors file whose bytes depend only on the tensors and the metadata.

	safetensors writes the metadata keys in hash order, which changes from one process to the next, so
	two saves of the same model differed; the header is written again with its keys in a fixed order.
	Written under a temporary name, then renamed: an interrupted save never leaves half a file behind.
	"""
	data = safetensors_bytes(tensors, metadata=metadata)
	n = int.from_bytes(data[:8], "little")
	header = json.loads(data[8 : 8 + n])
	ordered = {"__metadata__": dict(sorted(header.pop("__metadata__", {}).items()))}
	ordered.update(sorted(header.items(), key=lambda item: item[1]["data_offsets"]))
	text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
	text += b" " * (-len(text) % 8)  # the format aligns the tensor data to 8 bytes
	path = Path(path)
	tmp = path.with_name(path.name + ".tmp")
	try:
		with open(tmp, "wb") as f:
			f.write(len(text).to_bytes(8, "little"))
			f.write(text)
			f.write(memoryview(data)[8 + n :])
		os.replace(tmp, path)
	except BaseException:
		tmp.unlink(missing_ok=True)  # a full disk must not keep the partial file
		raise


def load_model(
	path: str | Path,
	*,
	config: ModelConfig | None = None,
	vocab_size: int | None = None,
	device: torch.device | str = "cpu",
	dtype: torch.dtype = torch.float32,
) -> Transformer:
	"""Load a Transformer from a checkpoint or run directory, a .safetensors file or a raw state_dict .pt.

	`vocab_size` (the tokenizer's) is checked against the weights: it may be smaller (spare slots of
	the model's vocabulary), not larger. Any mismatch of keys or shapes raises a ValueError naming the
	file, the key and both shapes.
	"""
	file, config = _locate(Path(path), config)
	state, metadata = _read(file)
	state = _normalise_keys(state)
	if config is None and "dimgpt_model_config" in metadata:
		try:
			config = from_dict(ModelConfig, json.loads(metadata["dimgpt_model_config"]))
		except (ValueError, TypeError) as error:
			raise BadFileError(f"{file}: the model config in its metadata is invalid ({error})") from None
	if config is None:
		config = infer_config(state, file)
	if vocab_size is not None:
		runs.check_vocab(vocab_size, config.vocab_size, "the tokenizer", file)
	_check(state, config, file)
	with torch.device("meta"):
		model = Transformer(config)
	model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, assign=True)
	model.tie_weights()
	return model.to(device).eval()


def read_model_config(path: str | Path) -> ModelConfig:
	"""The ModelConfig of the weights at `path` (as `load_model` finds it), reading no tensor when a
	model.json or the safetensors metadata says it."""
	file, config = _locate(Path(path), None)
	if config is not None:
		return config
	if file.suffix == ".safetensors":
		from safetensors import safe_open

		with safe_open(str(file), framework="pt") as f:
			metadata = f.metadata() or {}
		if "dimgpt_model_config" in metadata:
			return from_dict(ModelConfig, json.loads(metadata["dimgpt_model_config"]))
	return infer_config(_normalise_keys(_read(file)[0]), file)


def infer_config(state: dict[str, torch.Tensor], file: Path | str = "<state_dict>") -> ModelConfig:
	"""ModelConfig from the tensor shapes of a DimensionGPT-layout state_dict (see the module doc)."""
	for key in ("token_embedding.weight", "blocks.0.attention.key.weight", "blocks.0.feed_forward.linear_1.weight"):
		if key not in state:
			raise BadFileError(f"{file}: key {key!r} is missing: not a DimensionGPT-layout state_dict")
	vocab_size, dim = state["token_embedding.weight"].shape
	kv_dim = state["blocks.0.attention.key.weight"].shape[0]
	hidden_dim = state["blocks.0.feed_forward.linear_1.weight"].shape[0]
	n_layers = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k)))
	if dim % INFERRED_HEAD_DIM or kv_dim % INFERRED_HEAD_DIM:
		raise BadFileError(
			f"{file}: dim {dim} / key width {kv_dim} are not multiples of {INFERRED_HEAD_DIM}, so the head "
			"count cannot be guessed: pass config=ModelConfig(...) (or put a model.json next to the weights)"
		)
	return ModelConfig(
		vocab_size=vocab_size,
		context_length=INFERRED_CONTEXT,
		window=INFERRED_WINDOW,
		dim=dim,
		n_layers=n_layers,
		n_heads=dim // INFERRED_HEAD_DIM,
		n_kv_heads=kv_dim // INFERRED_HEAD_DIM,
		hidden_dim=hidden_dim,
	)


def _locate(path: Path, config: ModelConfig | None) -> tuple[Path, ModelConfig | None]:
	where = runs.checkpoint(path)
	file = where / WEIGHTS_FILE if where.is_dir() else where
	if config is None and (file.parent / CONFIG_FILE).is_file():
		config = load_json(ModelConfig, file.parent / CONFIG_FILE, required=SHAPE_FIELDS)
	return file, config


def _read(file: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
	not_ours = (
		f"{file}: not a DimensionGPT state dict or checkpoint; give a .safetensors file, a run or checkpoint "
		"directory, or the released DimensionGPT-0.2B(-Chat).pt"
	)
	try:
		if file.suffix == ".safetensors":
			from safetensors import safe_open

			with safe_open(str(file), framework="pt") as f:
				metadata = f.metadata() or {}
			return load_file(str(file)), metadata
		state = torch.load(file, map_location="cpu", weights_only=True)
	except (SafetensorError, EOFError) as error:
		raise BadFileError(
			f"{file}: cannot read the weights, the file looks truncated or corrupt ({error}); download or copy it again"
		) from None
	except OSError:
		raise
	except Exception as error:
		# torch.load's refusal of a pickle that is not plain tensors (a foreign object, a malicious file)
		# ends with advice to load it unsafely: never pass that on; the file is simply not ours.
		if "truncated" in str(error) or "failed finding central directory" in str(error):
			raise BadFileError(
				f"{file}: cannot read the weights, the file looks truncated or corrupt; download or copy it again"
			) from None
		raise BadFileError(not_ours) from None
	if isinstance(state, dict) and isinstance(state.get("model"), dict):
		state = state["model"]  # a training checkpoint holding the state_dict under "model"
	if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
		raise BadFileError(not_ours)
	return state, {}


def _normalise_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
	# torch.compile and DistributedDataParallel prefix the names; the released files have none.
	state = {re.sub(r"^(_orig_mod\.|module\.)+", "", k): v for k, v in state.items()}
	if TIED_KEY not in state and "token_embedding.weight" in state:
		state[TIED_KEY] = state["token_embedding.weight"]
	return state


def _check(state: dict[str, torch.Tensor], config: ModelConfig, file: Path) -> None:
	with torch.device("meta"):
		expected = {k: tuple(v.shape) for k, v in Transformer(config).state_dict().items()}
	missing = [k for k in expected if k not in state]
	unexpected = [k for k in state if k not in expected]
	if missing or unexpected:
		raise BadFileError(
			f"{file}: keys do not match a DimensionGPT model with {config.n_layers} layers"
			+ (f"; missing: {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}" if missing else "")
			+ (
				f"; unexpected: {', '.join(unexpected[:8])}{' ...' if len(unexpected) > 8 else ''}"
				if unexpected
				else ""
			)
		)
	for key, shape in expected.items():
		if tuple(state[key].shape) != shape:
			raise BadFileError(
				f"{file}: key {key!r} has shape {tuple(state[key].shape)} in the file but the model "
				f"({config}) expects {shape}"
			)
	if state[TIED_KEY] is not state["token_embedding.weight"] and not torch.equal(
		state[TIED_KEY], state["token_embedding.weight"]
	):
		raise BadFileError(f"{file}: {TIED_KEY} differs from token_embedding.weight, but the output layer is tied")
