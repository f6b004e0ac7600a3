"""Configuration: frozen dataclasses, named presets, JSON round-trip.

Nothing in the package reads a module-level setting: every number a job uses lives in one of
these objects, and every artefact on disk (dataset, checkpoint) carries the JSON of the configs
that made it.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class ModelConfig:
	"""Shape of the transformer. Defaults are DimensionGPT-0.2B."""

	vocab_size: int = 32_000
	context_length: int = 512
	window: int = 256  # a query sees itself and the `window` keys before it
	dim: int = 1024
	n_layers: int = 16
	n_heads: int = 16
	n_kv_heads: int = 4
	hidden_dim: int = 0  # 0 means int(2/3 * 4 * dim), the SwiGLU size of the release
	rope_theta: float = 10_000.0
	norm_eps: float = 1e-5
	init_std: float = 0.02

	def __post_init__(self) -> None:
		if self.hidden_dim == 0:
			object.__setattr__(self, "hidden_dim", int(2 / 3 * 4 * self.dim))
		problems = []
		if self.dim % self.n_heads:
			problems.append(f"dim={self.dim} is not a multiple of n_heads={self.n_heads}")
		elif (self.dim // self.n_heads) % 2:
			problems.append(f"head_dim={self.dim // self.n_heads} must be even for RoPE")
		if self.n_heads % self.n_kv_heads:
			problems.append(f"n_heads={self.n_heads} is not a multiple of n_kv_heads={self.n_kv_heads}")
		for name in ("vocab_size", "context_length", "window", "dim", "n_layers", "n_heads", "n_kv_heads"):
			if getattr(self, name) <= 0:
				problems.append(f"{name} must be positive, got {getattr(self, name)}")
		if problems:
			raise ValueError("invalid ModelConfig: " + "; ".join(problems))

	@property
	def head_dim(self) -> int:
		return self.dim // self.n_heads

	@property
	def kv_dim(self) -> int:
		return self.n_kv_heads * self.head_dim

	def num_parameters(self) -> int:
		"""Parameter count of the model this config builds (output layer tied to the embedding)."""
		attention = self.dim * self.dim * 2 + self.dim * self.kv_dim * 2  # query, projection, key, value
		feed_forward = 3 * self.dim * self.hidden_dim
		block = attention + feed_forward + 2 * self.dim  # two RMSNorm weights
		return self.vocab_size * self.dim + self.n_layers * block + self.dim


@dataclass(frozen=True)
class SourceConfig:
	"""One named text stream of the mix.

	kind: "hf" (a Hugging Face dataset id in `path`), "files" (a local path or glob of
	txt/jsonl/parquet files) or "embedded" (the corpus shipped with the project).
	multiplier: sampling weight times size, as in the DimensionGPT mix.
	"""

	name: str
	kind: str = "files"
	path: str = ""
	multiplier: float = 1.0
	hf_config: str | None = None
	split: str = "train"
	text_column: str = "text"
	streaming: bool = False

	def __post_init__(self) -> None:
		if self.kind not in ("hf", "files", "embedded"):
			raise ValueError(f"source {self.name!r}: kind must be 'hf', 'files' or 'embedded', got {self.kind!r}")
		if self.multiplier < 0:
			raise ValueError(f"source {self.name!r}: multiplier must be >= 0, got {self.multiplier}")


@dataclass(frozen=True)
class DataConfig:
	"""How text becomes a tokenizer and token files."""

	vocab_size: int = 32_000
	tokenizer_chars: int = 300_000_000  # characters sampled to train the vocabulary
	max_token_length: int = 16
	forced_tokens: tuple[str, ...] = ()
	min_document_chars: int = 64
	validation_fraction: float = 0.001
	min_validation_documents: int = 2
	shard_tokens: int = 100_000_000  # tokens per shard file (bounded shard size)
	sources: tuple[SourceConfig, ...] = ()
	instruct_sources: tuple[SourceConfig, ...] = ()
	seed: int = 0


@dataclass(frozen=True)
class TrainConfig:
	"""Optimisation recipe. Defaults are the DimensionGPT pretraining recipe."""

	batch_size: int = 16
	grad_accum: int = 64
	lr: float = 6e-4
	min_lr: float = 6e-5
	warmup_steps: int = 2_000
	decay_steps: int = 100_000
	weight_decay: float = 0.1
	beta1: float = 0.9
	beta2: float = 0.95
	eps: float = 1e-5
	grad_clip: float = 1.0
	precision: str = "auto"  # auto | bf16 | fp16 | fp32
	compile: bool = False
	max_steps: int | None = 100_000
	max_tokens: int | None = None
	max_seconds: float | None = None
	eval_every: int = 1_000
	eval_batches: int = 20
	checkpoint_every: int = 1_000
	log_every: int = 10
	instruction_loss_weight: float = 0.1  # fine-tuning: weight of instruction tokens in training
	seed: int = 0

	def __post_init__(self) -> None:
		if self.precision not in ("auto", "bf16", "fp16", "fp32"):
			raise ValueError(f"precision must be auto, bf16, fp16 or fp32, got {self.precision!r}")


@dataclass(frozen=True)
class Preset:
	"""A named bundle of the configs a full run needs."""

	name: str
	model: ModelConfig
	data: DataConfig
	train: TrainConfig
	finetune: TrainConfig = field(default_factory=TrainConfig)


def _dimensiongpt() -> Preset:
	return Preset(
		name="dimensiongpt-0.2b",
		model=ModelConfig(),
		data=DataConfig(),
		train=TrainConfig(),
		finetune=TrainConfig(
			lr=1e-4,
			min_lr=1e-5,
			warmup_steps=100,
			decay_steps=5_000,
			max_steps=5_000,
			eval_every=250,
			checkpoint_every=250,
		),
	)


def _tiny() -> Preset:
	"""Small enough to train in minutes on 2 CPU cores."""
	return Preset(
		name="tiny",
		model=ModelConfig(
			vocab_size=4_096,
			context_length=128,
			window=64,
			dim=128,
			n_layers=4,
			n_heads=4,
			n_kv_heads=2,
		),
		data=DataConfig(vocab_size=4_096, tokenizer_chars=5_000_000, shard_tokens=1_000_000),
		train=TrainConfig(
			batch_size=16,
			grad_accum=1,
			lr=3e-3,
			min_lr=3e-4,
			warmup_steps=50,
			decay_steps=2_000,
			max_steps=2_000,
			eval_every=100,
			eval_batches=10,
			checkpoint_every=100,
			log_every=10,
		),
		finetune=TrainConfig(
			batch_size=16,
			grad_accum=1,
			lr=1e-3,
			min_lr=1e-4,
			warmup_steps=20,
			decay_steps=400,
			max_steps=400,
			eval_every=50,
			eval_batches=10,
			checkpoint_every=50,
			log_every=10,
		),
	)


PRESETS = {"dimensiongpt-0.2b": _dimensiongpt, "tiny": _tiny}


def get_preset(name: str) -> Preset:
	"""The preset called `name` (see `PRESETS`)."""
	if name not in PRESETS:
		raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
	return PRESETS[name]()


# --- JSON round-trip --------------------------------------------------------------------------------


def to_dict(config: Any) -> dict[str, Any]:
	"""A plain JSON-able dict of a config dataclass (tuples become lists)."""
	return dataclasses.asdict(config)


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
	"""Rebuild a config dataclass from `to_dict`'s output; unknown keys are an error."""
	known = {f.name: f for f in fields(cls)}
	unknown = set(data) - set(known)
	if unknown:
		raise ValueError(f"{cls.__name__}: unknown field(s) {sorted(unknown)}")
	hints = typing.get_type_hints(cls)
	return cls(**{name: _convert(hints[name], value) for name, value in data.items()})


def _convert(hint: Any, value: Any) -> Any:
	origin = typing.get_origin(hint)
	if dataclasses.is_dataclass(hint) and isinstance(value, dict):
		return from_dict(hint, value)
	if origin is tuple and isinstance(value, list | tuple):
		inner = typing.get_args(hint)[0]
		return tuple(_convert(inner, v) for v in value)
	if origin in (typing.Union, types.UnionType):
		for option in typing.get_args(hint):
			if dataclasses.is_dataclass(option) and isinstance(value, dict):
				return from_dict(option, value)
	return value


def save_json(config: Any, path: str | Path) -> None:
	"""Write a config dataclass as indented JSON."""
	Path(path).write_text(json.dumps(to_dict(config), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def load_json(cls: type[T], path: str | Path) -> T:
	"""Read a config dataclass written by `save_json`, naming the file on error."""
	path = Path(path)
	try:
		data = json.loads(path.read_text(encoding="utf-8"))
		return from_dict(cls, data)
	except FileNotFoundError:
		raise FileNotFoundError(f"config file not found: {path}") from None
	except (ValueError, TypeError) as error:
		raise ValueError(f"{path}: not a valid {cls.__name__} JSON ({error})") from None
