"""Configuration schema: frozen dataclasses and their JSON round-trip.

Nothing in the package reads a module-level setting: every number a job uses lives in one of
these objects, and every artefact on disk (dataset, checkpoint) carries the JSON of the configs
that made it. This module only describes: it reads no file, on import or when a config is built.
The named presets, the source catalogues and the shipped resources are in `dimgpt.presets`.
"""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from collections.abc import Collection
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

from dimgpt.errors import BadFileError, NotFoundError, UsageError

T = TypeVar("T")

SCHEDULES = ("cosine", "wsd")  # learning-rate schedules (dimgpt.training.schedule)
OPTIMIZERS = ("adamw", "muon")  # dimgpt.training.optim


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
			raise UsageError("invalid ModelConfig: " + "; ".join(problems))

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
	txt/jsonl/parquet files, several separated by commas) or "embedded" (the corpus shipped
	with the project).
	multiplier: sampling weight times size, as in the DimensionGPT mix.
	text_column: the column holding the text; "title+text" joins several columns with a blank line.
	split: a datasets split expression ("train", "train+validation+test").
	max_chars: stop reading the source after this many characters (0: read it all; with
	`create-data --shard I/N`, each part reads up to this many, and merge-data keeps what one run keeps).
	group: label kept with every instruction conversation (fine-tuning mix); empty means `name`.
	filter: apply the document quality filters (`DataConfig.quality`), tuned for French prose.
	Hub sources are always streamed.
	"""

	name: str
	kind: str = "files"
	path: str = ""
	multiplier: float = 1.0
	hf_config: str | None = None
	split: str = "train"
	text_column: str = "text"
	max_chars: int = 0
	group: str = ""
	filter: bool = True

	def __post_init__(self) -> None:
		if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", self.name):
			raise UsageError(f"source name {self.name!r}: use letters, digits, '_', '.', '-' (it names a folder)")
		if self.kind not in ("hf", "files", "embedded"):
			raise UsageError(f"source {self.name!r}: kind must be 'hf', 'files' or 'embedded', got {self.kind!r}")
		if self.kind != "embedded" and not self.path:
			raise UsageError(f"source {self.name!r}: kind {self.kind!r} needs a `path`")
		if self.multiplier < 0:
			raise UsageError(f"source {self.name!r}: multiplier must be >= 0, got {self.multiplier}")


@dataclass(frozen=True)
class MixGroup:
	"""Conversations carrying the store label `name`, drawn for a `ratio` share of training rows."""

	name: str
	ratio: float

	def __post_init__(self) -> None:
		if self.ratio < 0:
			raise UsageError(f"mix group {self.name!r}: ratio must be >= 0, got {self.ratio}")


DIMENSIONGPT_GROUPS = (MixGroup("human", 0.099), MixGroup("chatbot", 0.9), MixGroup("identity", 0.001))


@dataclass(frozen=True)
class InstructMix:
	"""The conversation mix of fine-tuning.

	groups: drawn at their ratios (normalised over the groups the store actually holds).
	preprompt_ratio: share of training conversations that get a system preprompt from `preprompts`.
	validation_preprompt: the one preprompt of every validation conversation ("" = `preprompts[0]`,
	None = no preprompt).

	The defaults have no preprompt pool (the pool is a file: see `dimgpt.presets.dimensiongpt_mix`,
	the release's mix with the shipped pool, which the presets use).
	"""

	groups: tuple[MixGroup, ...] = DIMENSIONGPT_GROUPS
	preprompt_ratio: float = 0.0
	preprompts: tuple[str, ...] = ()
	validation_preprompt: str | None = None

	def __post_init__(self) -> None:
		names = [g.name for g in self.groups]
		if not self.groups or sum(g.ratio for g in self.groups) <= 0:
			raise UsageError("InstructMix: give at least one group with a positive ratio")
		if len(set(names)) != len(names):
			raise UsageError(f"InstructMix: group names must be unique, got {names}")
		if not 0 <= self.preprompt_ratio <= 1:
			raise UsageError(f"InstructMix: preprompt_ratio must be in [0, 1], got {self.preprompt_ratio}")
		if any(not p.strip() for p in self.preprompts):
			raise UsageError("InstructMix: empty preprompt in the pool")
		if (self.preprompt_ratio > 0 or self.validation_preprompt == "") and not self.preprompts:
			raise UsageError(
				"InstructMix: the preprompt pool is empty (set preprompt_ratio=0 and validation_preprompt=None)"
			)
		if self.validation_preprompt == "":
			object.__setattr__(self, "validation_preprompt", self.preprompts[0])

	def ratios(self, available: set[str] | None = None) -> dict[str, float]:
		"""Group name -> probability, renormalised over the `available` groups (all when None)."""
		kept = {g.name: g.ratio for g in self.groups if available is None or g.name in available}
		total = sum(kept.values())
		if total <= 0:
			raise UsageError(
				f"InstructMix: none of the groups {[g.name for g in self.groups]} has conversations "
				f"(the store holds {sorted(available or ())}); check the `group` of the instruction sources"
			)
		return {name: ratio / total for name, ratio in kept.items() if ratio > 0}


@dataclass(frozen=True)
class QualityConfig:
	"""Document filters and near-duplicate removal, each a switch (rules and thresholds: `dimgpt.data.quality`).

	A source with `filter=False` skips the filters; deduplication spans every source of a run.
	"""

	word_stats: bool = True  # too few words, or words too short or too long on average
	stop_words: bool = True  # fewer than 2 French stop words: not French prose
	repetition: bool = True  # repeated lines, paragraphs and word n-grams
	symbols: bool = True  # "#", ellipses, bullets, words without letters
	digits: bool = True  # mostly digits
	short_lines: bool = True  # mostly short lines that end without punctuation (menus, lists)
	boilerplate: bool = True  # cookie notices, legal notices, "lorem ipsum"...
	near_duplicates: bool = True  # MinHash LSH over word 5-grams, within and across sources
	# MinHash of 112 permutations in 14 LSH bands of 8 (FineWeb's): a pair of documents whose word 5-grams
	# have Jaccard similarity 0.75 / 0.8 / 0.9 is caught with probability 0.77 / 0.92 / 0.9996 (0.05 at 0.5)
	dedup_permutations: int = 112  # signature bytes per document: 4 x this (kept beside each shard)
	dedup_bands: int = 14
	# the index (`dimgpt.data.dedup`): a Bloom filter per band, sized for `dedup_capacity` documents (0: one
	# per 4,000 bytes of the sources' files, at least 1M; a hub stream counts 10M) at this false-positive rate
	# each: 19 bits a band, 1.93 GB with the exact filter at 52M documents, 0.014 % of them wrongly dropped
	dedup_capacity: int = 0
	dedup_false_positive: float = 1e-4


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
	instruct_validation_fraction: float = 0.02  # of the conversations of each instruction source
	shard_tokens: int = 100_000_000  # tokens per shard file (bounded shard size)
	# a worker's unit of work: about this many bytes of a source; small, so that the workers share a source
	# evenly (the last pieces finish together) and memory stays low (a few pieces in flight per worker)
	piece_bytes: int = 2_000_000
	encode_workers: int = 0  # worker processes (read, filter, encode); 0: as many as the cores this process may use
	quality: QualityConfig = QualityConfig()
	# the corpus shipped with us (English Python documentation: the French filters would drop it)
	sources: tuple[SourceConfig, ...] = (SourceConfig("embedded", kind="embedded", filter=False),)
	instruct_sources: tuple[SourceConfig, ...] = ()  # the presets give the shipped conversations
	instruct_mix: InstructMix = InstructMix()  # fine-tuning groups, ratios, preprompts
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
	max_nonfinite_in_row: int = 20  # this many skipped (non-finite) updates in a row stop the run
	patience: int = 0  # stop after this many validations without a new best loss (0: never); best is kept
	seed: int = 0
	# The newer recipe (README "Training recipes"): see dimgpt.training.schedule and .optim.
	schedule: str = "cosine"  # cosine (the release's) | wsd (warmup, constant, final linear decay)
	cooldown_steps: int = 0  # wsd: steps of the final decay, ending at decay_steps; 0: the last 20 %
	optimizer: str = "adamw"  # adamw (the release's) | muon (Muon on the blocks' matrices, AdamW on the rest)
	muon_lr: float = 0.02  # Muon's peak rate (its groups follow the schedule's shape)
	muon_momentum: float = 0.95
	muon_weight_decay: float = 0.0  # decoupled, as AdamW's: each step scales the weights by 1 - rate × this
	muon_ns_steps: int = 5  # Newton-Schulz iterations that orthogonalise each update (torch.optim.Muon's ns_steps)

	def __post_init__(self) -> None:
		if self.precision not in ("auto", "bf16", "fp16", "fp32"):
			raise UsageError(f"precision must be auto, bf16, fp16 or fp32, got {self.precision!r}")
		if self.schedule not in SCHEDULES:
			raise UsageError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
		if self.optimizer not in OPTIMIZERS:
			raise UsageError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
		if self.cooldown_steps < 0:
			raise UsageError(f"cooldown_steps must be >= 0, got {self.cooldown_steps}")
		if self.muon_ns_steps < 1:
			raise UsageError(f"muon_ns_steps must be >= 1, got {self.muon_ns_steps}")


@dataclass(frozen=True)
class Preset:
	"""A named bundle of the configs a full run needs: a recipe.

	train: the recipe of a pretraining run (in a run's saved recipe: the one that run follows).
	finetune: the recipe of a fine-tuning started from such a run.
	job_pretrain_seconds / job_finetune_seconds: the wall-clock budgets of the main job
	(`python -m dimgpt run`) on top of the step budgets; None: the step budget alone.
	"""

	name: str
	model: ModelConfig
	data: DataConfig
	train: TrainConfig
	finetune: TrainConfig = TrainConfig()
	job_pretrain_seconds: float | None = None
	job_finetune_seconds: float | None = None


# --- JSON round-trip --------------------------------------------------------------------------------


def to_dict(config: Any) -> dict[str, Any]:
	"""A plain JSON-able dict of a config dataclass (tuples become lists)."""
	return dataclasses.asdict(config)


def from_dict(cls: type[T], data: dict[str, Any], *, required: Collection[str] = ()) -> T:
	"""Rebuild a config dataclass from `to_dict`'s output; unknown keys, values of the wrong type and
	missing `required` keys are errors (other missing keys take their defaults)."""
	if not isinstance(data, dict):
		raise UsageError(f"{cls.__name__}: expected a JSON object, got {type(data).__name__}")
	known = {f.name: f for f in fields(cls)}
	unknown = set(data) - set(known)
	if unknown:
		raise UsageError(f"{cls.__name__}: unknown field(s) {sorted(unknown)}")
	missing = [name for name in required if name not in data]
	if missing:
		raise UsageError(f"{cls.__name__}: field(s) {', '.join(missing)} missing")
	check_fields(cls, data)
	hints = typing.get_type_hints(cls)
	return cls(**{name: _convert(hints[name], value) for name, value in data.items()})


_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "null"}


def check_fields(cls: type, values: dict[str, Any]) -> None:
	"""Refuse a value whose JSON type does not fit its field (`"dim": "abc"`), naming the field."""
	hints = typing.get_type_hints(cls)
	for name, value in values.items():
		hint = hints[name]
		options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
		simple = [o for o in options if o in _TYPE_NAMES]
		if len(simple) < len(options):
			continue  # a nested dataclass or a tuple: checked by its own fields or by the config itself
		if not any(_fits(option, value) for option in simple):
			wanted = " or ".join(_TYPE_NAMES[o] for o in simple)
			raise UsageError(f"{cls.__name__}.{name} must be {wanted}, got {value!r}")


def _fits(kind: type, value: Any) -> bool:
	if kind is float:
		return isinstance(value, int | float) and not isinstance(value, bool)
	if kind is int:
		return isinstance(value, int) and not isinstance(value, bool)
	return isinstance(value, kind)


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


def load_json(cls: type[T], path: str | Path, *, required: Collection[str] = ()) -> T:
	"""Read a config dataclass written by `save_json`, naming the file (and the field) on error."""
	path = Path(path)
	try:
		data = json.loads(path.read_text(encoding="utf-8"))
		return from_dict(cls, data, required=required)
	except FileNotFoundError:
		raise NotFoundError(f"config file not found: {path}") from None
	except (ValueError, TypeError) as error:  # JSON, UTF-8, type and field errors
		raise BadFileError(f"{path}: not a valid {cls.__name__} JSON ({error})") from None
