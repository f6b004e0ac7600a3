"""The catalogue: named presets, named source lists and the resources shipped with the project.

`dimgpt.config` describes what a recipe holds; this module says which recipes and sources exist:

- `PRESETS`: "dimensiongpt-0.2b" (the release's model, data and recipes), "dimensiongpt-0.2b-v2"
  (the same with the newer training recipe), "tiny" (2 CPU cores, the newer recipe).
- `SOURCE_LISTS`: "embedded" (shipped corpus and conversations), "corpus-fr" (../shared/data),
  "dimensiongpt" (the release's Hugging Face datasets).

A new recipe is a function returning a `Preset`, registered in `PRESETS`; a new named source list
is a function returning (pretraining, instruction) sources, registered in `SOURCE_LISTS`. Nothing
here is read at import: the preprompt pool is read when a preset is asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from dimgpt.config import DataConfig, InstructMix, ModelConfig, Preset, SourceConfig, TrainConfig
from dimgpt.errors import NotFoundError, UsageError

INSTRUCT_RESOURCES = Path(__file__).resolve().parents[1] / "resources" / "instruct"
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def load_preprompts(path: str | Path | None = None) -> tuple[str, ...]:
	"""The pool of system preprompts: one per line of a UTF-8 text file, blank lines skipped."""
	path = Path(path) if path is not None else INSTRUCT_RESOURCES / "preprompts.txt"
	try:
		lines = path.read_text(encoding="utf-8").splitlines()
	except FileNotFoundError:
		raise NotFoundError(f"preprompt pool not found: {path} (one preprompt per line)") from None
	return tuple(line.strip() for line in lines if line.strip())


def dimensiongpt_mix(preprompts: str | Path | None = None) -> InstructMix:
	"""The release's fine-tuning mix (human 9.9 %, chatbot 90 %, identity 0.1 %), half the training
	conversations with a preprompt from the pool (`resources/instruct/preprompts.txt` by default),
	validation with the pool's first line."""
	return InstructMix(preprompt_ratio=0.5, preprompts=load_preprompts(preprompts), validation_preprompt="")


# --- source lists -----------------------------------------------------------------------------------

SourceLists = tuple[tuple[SourceConfig, ...], tuple[SourceConfig, ...]]  # (pretraining, instruction)

# English Python documentation: the French filters would drop it
EMBEDDED_SOURCES = (SourceConfig("embedded", kind="embedded", filter=False),)
IDENTITY_SOURCE = SourceConfig("self_identity", path=str(INSTRUCT_RESOURCES / "self_identity.jsonl"), group="identity")
# the conversations shipped with the project: the instruction set when no other is given
EMBEDDED_INSTRUCT_SOURCES = (
	SourceConfig("default_conversations", path=str(INSTRUCT_RESOURCES / "default.jsonl"), group="chatbot"),
	IDENTITY_SOURCE,
)


def _hf(name: str, path: str, multiplier: float, **kwargs: Any) -> SourceConfig:
	return SourceConfig(name, kind="hf", path=path, multiplier=multiplier, **kwargs)


def dimensiongpt_sources() -> SourceLists:
	"""The DimensionGPT release mix by Hugging Face dataset ids: (pretraining, instruction) sources.

	Every dataset of a group carries the group's multiplier (Common Crawl 1.0, Wikipedia 4.0, news 0.3,
	books 0.2, institutions 2.0, others 2.0), so a group weighs its size times its multiplier.
	Common Crawl and books were cut at 150B and 10B characters in the release.
	"""
	all_splits = "train+validation+test"
	pretrain = (
		_hf("common_crawl", "ontocord/CulturaY", 1.0, hf_config="fr", max_chars=150_000_000_000),
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


def corpus_fr_sources(root: str | Path | None = None) -> SourceLists:
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


SOURCE_LISTS: dict[str, Callable[[], SourceLists]] = {
	"embedded": lambda: (EMBEDDED_SOURCES, EMBEDDED_INSTRUCT_SOURCES),
	"corpus-fr": corpus_fr_sources,
	"dimensiongpt": dimensiongpt_sources,
}


T = TypeVar("T")


def _build_named(catalogue: dict[str, Callable[[], T]], name: str, what: str) -> T:
	"""Build the catalogue entry called `name`; an unknown name lists the known ones."""
	if name not in catalogue:
		raise UsageError(f"unknown {what} {name!r}; choose one of: {', '.join(catalogue)}")
	return catalogue[name]()


def get_sources(name: str) -> SourceLists:
	"""The named source list (see `SOURCE_LISTS`): (pretraining, instruction) sources."""
	return _build_named(SOURCE_LISTS, name, "source list")


# --- presets ----------------------------------------------------------------------------------------


def _dimensiongpt() -> Preset:
	pretrain, instruct = dimensiongpt_sources()
	return Preset(
		name="dimensiongpt-0.2b",
		model=ModelConfig(),
		data=DataConfig(sources=pretrain, instruct_sources=instruct, instruct_mix=dimensiongpt_mix()),
		train=TrainConfig(),
		finetune=TrainConfig(
			lr=1e-4,
			min_lr=1e-5,
			warmup_steps=100,
			decay_steps=5_000,
			max_steps=5_000,
			eval_every=250,
			checkpoint_every=250,
			patience=4,  # a thousand steps without a better validation loss: it memorises, stop
		),
	)


# The newer recipe (README "Training recipes", bench/recipe.py): Muon on the blocks' matrices, AdamW on
# the embedding and norms, warmup-stable-decay. Tuned on `tiny` (corpus_fr, 40-step runs): Muon's rate
# 0.01, no weight decay, 3 Newton-Schulz iterations (5 cost more CPU and gained nothing); the AdamW
# rate of the embedding and norms is raised with it (`tiny`: 1e-2 where DimensionGPT's AdamW takes 3e-3).
NEW_RECIPE = {"optimizer": "muon", "schedule": "wsd", "muon_lr": 0.01, "muon_weight_decay": 0.0, "muon_ns_steps": 3}


def _dimensiongpt_v2() -> Preset:
	"""DimensionGPT-0.2B's model and data with the newer recipe; its stable phase can be decayed into a
	final model at any step (`python -m dimgpt decay`), 20,000 steps of decay by default."""
	release = _dimensiongpt()
	return replace(
		release,
		name="dimensiongpt-0.2b-v2",
		# AdamW's rate (embedding, norms) raised as on tiny, 10/3 of the release's: not measured at this size
		train=replace(release.train, **NEW_RECIPE, lr=2e-3, min_lr=2e-4, cooldown_steps=20_000),
	)


# tiny's pretraining as DimensionGPT's recipe runs it (AdamW 3e-3 to 3e-4, cosine): the reference the
# newer recipe is measured against (bench/recipe.py); the preset trains with the newer one.
TINY_DIMENSIONGPT_TRAIN = TrainConfig(
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
		data=DataConfig(
			vocab_size=4_096,
			tokenizer_chars=5_000_000,
			shard_tokens=1_000_000,
			instruct_sources=EMBEDDED_INSTRUCT_SOURCES,
			instruct_mix=dimensiongpt_mix(),
		),
		train=replace(TINY_DIMENSIONGPT_TRAIN, **NEW_RECIPE, lr=1e-2, min_lr=1e-3),
		# fine-tuning keeps DimensionGPT's AdamW and cosine at the pretraining peak rate (3e-3 beat 1e-3 on
		# the 400-step CPU budget)
		finetune=replace(
			TINY_DIMENSIONGPT_TRAIN,
			warmup_steps=20,
			decay_steps=400,
			max_steps=400,
			eval_every=50,
			checkpoint_every=50,
			patience=2,  # 220 conversations are memorised within a few hundred steps
		),
		# the main job's budgets: a CPU run of about ten minutes in all
		job_pretrain_seconds=5 * 60,
		job_finetune_seconds=2 * 60,
	)


PRESETS: dict[str, Callable[[], Preset]] = {
	"dimensiongpt-0.2b": _dimensiongpt,
	"dimensiongpt-0.2b-v2": _dimensiongpt_v2,
	"tiny": _tiny,
}


def get_preset(name: str) -> Preset:
	"""The preset called `name` (see `PRESETS`)."""
	return _build_named(PRESETS, name, "preset")


def preset_for_model(model: ModelConfig) -> Preset | None:
	"""The catalogue preset whose model is `model` (for weights saved without their recipe), if any."""
	return next((preset for make in PRESETS.values() if (preset := make()).model == model), None)
