"""Configuration: frozen dataclasses, named presets, JSON round-trip.

Nothing in the package reads a module-level setting: every number a job uses lives in one of
these objects, and every artefact on disk (dataset, checkpoint) carries the JSON of the configs
that made it.
"""

from __future__ import annotations

import dataclasses
import json
import re
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
	txt/jsonl/parquet files, several separated by commas) or "embedded" (the corpus shipped
	with the project).
	multiplier: sampling weight times size, as in the DimensionGPT mix.
	text_column: the column holding the text; "title+text" joins several columns with a blank line.
	split: a datasets split expression ("train", "train+validation+test").
	max_chars: stop reading the source after this many characters (0: read it all).
	group: label kept with every instruction conversation (fine-tuning mix); empty means `name`.
	"""

	name: str
	kind: str = "files"
	path: str = ""
	multiplier: float = 1.0
	hf_config: str | None = None
	split: str = "train"
	text_column: str = "text"
	streaming: bool = False
	max_chars: int = 0
	group: str = ""

	def __post_init__(self) -> None:
		if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", self.name):
			raise ValueError(f"source name {self.name!r}: use letters, digits, '_', '.', '-' (it names a folder)")
		if self.kind not in ("hf", "files", "embedded"):
			raise ValueError(f"source {self.name!r}: kind must be 'hf', 'files' or 'embedded', got {self.kind!r}")
		if self.kind != "embedded" and not self.path:
			raise ValueError(f"source {self.name!r}: kind {self.kind!r} needs a `path`")
		if self.multiplier < 0:
			raise ValueError(f"source {self.name!r}: multiplier must be >= 0, got {self.multiplier}")


INSTRUCT_RESOURCES = Path(__file__).resolve().parents[1] / "resources" / "instruct"


def load_preprompts(path: str | Path | None = None) -> tuple[str, ...]:
	"""The pool of system preprompts: one per line of a UTF-8 text file, blank lines skipped."""
	path = Path(path) if path is not None else INSTRUCT_RESOURCES / "preprompts.txt"
	try:
		lines = path.read_text(encoding="utf-8").splitlines()
	except FileNotFoundError:
		raise FileNotFoundError(f"preprompt pool not found: {path} (one preprompt per line)") from None
	return tuple(line.strip() for line in lines if line.strip())


@dataclass(frozen=True)
class MixGroup:
	"""Conversations carrying the store label `name`, drawn for a `ratio` share of training rows."""

	name: str
	ratio: float

	def __post_init__(self) -> None:
		if self.ratio < 0:
			raise ValueError(f"mix group {self.name!r}: ratio must be >= 0, got {self.ratio}")


DIMENSIONGPT_GROUPS = (MixGroup("human", 0.099), MixGroup("chatbot", 0.9), MixGroup("identity", 0.001))


@dataclass(frozen=True)
class InstructMix:
	"""The conversation mix of fine-tuning.

	groups: drawn at their ratios (normalised over the groups the store actually holds).
	preprompt_ratio: share of training conversations that get a system preprompt from `preprompts`.
	validation_preprompt: the one preprompt of every validation conversation ("" = `preprompts[0]`,
	None = no preprompt).
	"""

	groups: tuple[MixGroup, ...] = DIMENSIONGPT_GROUPS
	preprompt_ratio: float = 0.5
	preprompts: tuple[str, ...] = field(default_factory=load_preprompts)
	validation_preprompt: str | None = ""

	def __post_init__(self) -> None:
		names = [g.name for g in self.groups]
		if not self.groups or sum(g.ratio for g in self.groups) <= 0:
			raise ValueError("InstructMix: give at least one group with a positive ratio")
		if len(set(names)) != len(names):
			raise ValueError(f"InstructMix: group names must be unique, got {names}")
		if not 0 <= self.preprompt_ratio <= 1:
			raise ValueError(f"InstructMix: preprompt_ratio must be in [0, 1], got {self.preprompt_ratio}")
		if any(not p.strip() for p in self.preprompts):
			raise ValueError("InstructMix: empty preprompt in the pool")
		if (self.preprompt_ratio > 0 or self.validation_preprompt == "") and not self.preprompts:
			raise ValueError(
				"InstructMix: the preprompt pool is empty (set preprompt_ratio=0 and validation_preprompt=None)"
			)
		if self.validation_preprompt == "":
			object.__setattr__(self, "validation_preprompt", self.preprompts[0])

	def ratios(self, available: set[str] | None = None) -> dict[str, float]:
		"""Group name -> probability, renormalised over the `available` groups (all when None)."""
		kept = {g.name: g.ratio for g in self.groups if available is None or g.name in available}
		total = sum(kept.values())
		if total <= 0:
			raise ValueError(
				f"InstructMix: none of the groups {[g.name for g in self.groups]} has conversations "
				f"(the store holds {sorted(available or ())}); check the `group` of the instruction sources"
			)
		return {name: ratio / total for name, ratio in kept.items() if ratio > 0}


EMBEDDED_SOURCES = (SourceConfig("embedded", kind="embedded"),)
IDENTITY_SOURCE = SourceConfig("self_identity", path=str(INSTRUCT_RESOURCES / "self_identity.jsonl"), group="identity")
# the conversations shipped with the project: the instruction set when no other is given
EMBEDDED_INSTRUCT_SOURCES = (
	SourceConfig("default_conversations", path=str(INSTRUCT_RESOURCES / "default.jsonl"), group="chatbot"),
	IDENTITY_SOURCE,
)


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
	encode_batch_chars: int = 16_000_000  # characters handed to the tokenizer at once (bounds memory; fewer waits)
	encode_workers: int = 0  # tokenizer processes; 0: as many as the cores this process may run on
	sources: tuple[SourceConfig, ...] = EMBEDDED_SOURCES
	instruct_sources: tuple[SourceConfig, ...] = EMBEDDED_INSTRUCT_SOURCES
	instruct_mix: InstructMix = field(default_factory=InstructMix)  # fine-tuning groups, ratios, preprompts
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


# --- source lists -----------------------------------------------------------------------------------

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _hf(name: str, path: str, multiplier: float, **kwargs: Any) -> SourceConfig:
	return SourceConfig(name, kind="hf", path=path, multiplier=multiplier, **kwargs)


def dimensiongpt_sources() -> tuple[tuple[SourceConfig, ...], tuple[SourceConfig, ...]]:
	"""The DimensionGPT release mix by Hugging Face dataset ids: (pretraining, instruction) sources.

	Every dataset of a group carries the group's multiplier (Common Crawl 1.0, Wikipedia 4.0, news 0.3,
	books 0.2, institutions 2.0, others 2.0), so a group weighs its size times its multiplier.
	Common Crawl and books were cut at 150B and 10B characters in the release.
	"""
	all_splits = "train+validation+test"
	pretrain = (
		_hf("common_crawl", "ontocord/CulturaY", 1.0, hf_config="fr", streaming=True, max_chars=150_000_000_000),
		_hf("wikipedia-wikipedia_fr", "eckendoerffer/wikipedia_fr", 4.0, split=all_splits),
		_hf("wikipedia-roots_wikipedia", "bigscience-data/roots_fr_wikipedia", 4.0),
		_hf("wikipedia-roots_wikivoyage", "bigscience-data/roots_fr_wikivoyage", 4.0),
		_hf("news-news_fr", "eckendoerffer/news_fr", 0.3, split=all_splits),
		_hf("news-roots_wikinews", "bigscience-data/roots_fr_wikinews", 0.3),
		_hf("news-cc_news", "intfloat/multilingual_cc_news", 0.3, hf_config="fr", text_column="title+maintext"),
		_hf("news-xlsum", "csebuetnlp/xlsum", 0.3, hf_config="french", split=all_splits, text_column="title+text"),
		_hf(
			"news-xlsum_summaries",
			"csebuetnlp/xlsum",
			0.3,
			hf_config="french",
			split=all_splits,
			text_column="title+summary",
		),
		_hf("news-mlsum", "mlsum", 0.3, hf_config="fr", split=all_splits, text_column="title+text"),
		_hf("news-mlsum_summaries", "mlsum", 0.3, hf_config="fr", split=all_splits, text_column="title+summary"),
		_hf("news-orange_sum", "orange_sum", 0.3, hf_config="title", split=all_splits, text_column="summary+text"),
		_hf("news-covid_news", "gustavecortal/fr_covid_news", 0.3, text_column="title+text"),
		_hf(
			"books",
			"PleIAs/French-PD-Books",
			0.2,
			streaming=True,
			text_column="complete_text",
			max_chars=10_000_000_000,
		),
		_hf("institutions-europarl", "bigscience-data/roots_fr_the_pile_europarl", 2.0),
		_hf(
			"institutions-qr_an",
			"cassandra-themis/QR-AN",
			2.0,
			hf_config="qran_generation",
			split=all_splits,
			text_column="question+answer",
		),
		_hf("others-ted_talks", "bigscience-data/roots_fr_ted_talks_iwslt", 2.0),
		_hf("others-bloom_lm", "sil-ai/bloom-lm", 2.0, hf_config="fra", split=all_splits),
	)
	instruct = tuple(
		_hf(
			f"instruct-{group}",
			"angeluriot/DimensionGPT_instruct",
			1.0,
			hf_config=f"{config}_conversations",
			group=group,
		)
		for group, config in (("human", "human"), ("chatbot", "chatbot"), ("identity", "dimension_gpt"))
	)
	return pretrain, instruct


def corpus_fr_sources(root: str | Path | None = None) -> tuple[tuple[SourceConfig, ...], tuple[SourceConfig, ...]]:
	"""The offline French corpus (../shared/data next to the repository): (pretraining, instruction) sources.

	Multipliers follow the DimensionGPT spirit at this small scale: novels 1.0, official texts
	("institutions") 2.0.
	"""
	root = Path(root) if root is not None else SHARED_DATA
	corpus, instruct = root / "corpus_fr", root / "instruct_fr"
	pretrain = (
		SourceConfig("eltec_novels", path=str(corpus / "eltec_fra_novels.jsonl"), multiplier=1.0),
		SourceConfig("textbox_prose", path=str(corpus / "textbox_fr19_prose.jsonl"), multiplier=1.0),
		SourceConfig("legi_codes", path=str(corpus / "legi_codes.jsonl"), multiplier=2.0),
		SourceConfig("service_public", path=str(corpus / "service_public_fiches.jsonl"), multiplier=2.0),
	)
	conversations = (
		SourceConfig("oasst1_fr", path=str(instruct / "oasst1_fr.jsonl"), group="human"),
		SourceConfig("service_public_faq", path=str(instruct / "service_public_faq_fr.jsonl"), group="chatbot"),
		SourceConfig("cnil_faq", path=str(instruct / "cnil_faq_fr.jsonl"), group="chatbot"),
		IDENTITY_SOURCE,
	)
	return pretrain, conversations


SOURCE_LISTS = {
	"embedded": lambda: (EMBEDDED_SOURCES, EMBEDDED_INSTRUCT_SOURCES),
	"corpus-fr": corpus_fr_sources,
	"dimensiongpt": dimensiongpt_sources,
}


def get_sources(name: str) -> tuple[tuple[SourceConfig, ...], tuple[SourceConfig, ...]]:
	"""The named source list (see `SOURCE_LISTS`): (pretraining, instruction) sources."""
	if name not in SOURCE_LISTS:
		raise ValueError(f"unknown source list {name!r}; choose one of: {', '.join(SOURCE_LISTS)}")
	return SOURCE_LISTS[name]()


# --- presets ----------------------------------------------------------------------------------------


def _dimensiongpt() -> Preset:
	pretrain, instruct = dimensiongpt_sources()
	return Preset(
		name="dimensiongpt-0.2b",
		model=ModelConfig(),
		data=DataConfig(sources=pretrain, instruct_sources=instruct),
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
		finetune=TrainConfig(  # peak lr as in pretraining: 3e-3 beat 1e-3 on the 400-step CPU budget
			batch_size=16,
			grad_accum=1,
			lr=3e-3,
			min_lr=3e-4,
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
