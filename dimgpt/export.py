"""Export to the Hugging Face `transformers` format: a `MistralForCausalLM` checkpoint plus its tokenizer.

DimensionGPT is a Mistral-shaped model (pre-norm RMSNorm, SwiGLU, GQA, RoPE, sliding-window attention,
no biases), so the export is a renaming of the weights and a config, with two facts to get right:

- RoPE: we rotate adjacent pairs (dims 2k, 2k+1 of a head form one complex number); `transformers`
  rotates halves (dims k and k + head_dim/2). Both use the frequency theta^(-2k/head_dim) for pair k, so
  reordering the output rows of the query and key projections of each head as [0, 2, 4, ..., 1, 3, 5, ...]
  turns one layout into the other. Attention scores are dot products of query and key rows, which do not
  change when both get the same reordering, so nothing else moves.
- Sliding window: our query i sees keys i - window ... i (window + 1 keys); `transformers` keeps key j
  when j > i - sliding_window, so its `sliding_window` is our window + 1.

The exported tokenizer (`tokenizer.json` over the same vocabulary) gives our ids on cleaned text
(`dimgpt.data.cleaning.clean`). Its normalizer also does the cleaning of the common path: all of the
release's replacement rules in their order (French quotes and the space inside them, emoji sequences and
flags), the transliteration of `TYPOGRAPHY` (dashes, quotes, special spaces, joiners), the rules for
spaces, tabs and newlines and the stripping; not `unidecode`'s transliteration of any other character:
text from elsewhere must be cleaned first, as our own `Tokenizer.encode` does by default.

    python -m dimgpt export-hf runs/tiny out/tiny-hf
    python -m dimgpt export-hf models/DimensionGPT-0.2B-Chat.pt out/dimensiongpt-hf --vocab data/vocab.txt

Then, anywhere `transformers` runs:

    tokenizer = AutoTokenizer.from_pretrained("out/tiny-hf")
    model = AutoModelForCausalLM.from_pretrained("out/tiny-hf")
    messages = [{"role": "user", "content": clean("Bonjour, ça va ?")}]
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    answer = model.generate(**inputs)[0, inputs["input_ids"].shape[1] :]
    print(tokenizer.decode(answer, skip_special_tokens=True))
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from dimgpt import runs
from dimgpt.config import ModelConfig
from dimgpt.data.chat_format import ANSWER_ENDS, jinja_template
from dimgpt.data.cleaning import CIRCLED, ENCODED_EMOJI, SEQUENCE_RULES, transliterate
from dimgpt.data.tokenizer import (
	CONTROL_TOKENS,
	END_OF_TEXT,
	NEW_LINE,
	PADDING,
	START_OF_TEXT,
	TAB,
	UNKNOWN,
	Tokenizer,
)
from dimgpt.errors import BadFileError, NotFoundError
from dimgpt.model.loading import write_safetensors
from dimgpt.sampling import SamplingConfig, banned_tokens

if TYPE_CHECKING:
	from dimgpt.model.transformer import Transformer

# WordPiece gives one unknown for a word longer than this; ours has no limit. Its search is quadratic
# in the word length, so the limit stays finite: only a run of over 10,000 letters, digits or symbols differs.
LONGEST_WORD = 10_000

# Characters outside the cleaned alphabet that French text often holds (quotes, dashes, ellipsis, degree,
# special spaces, soft hyphen, emoji joiners, accented letters of foreign names). The exported tokenizer's
# normalizer transliterates each of them as `clean` does (« » and \r have rules of their own), so text made
# of these, of the kept characters and of the rules' sequences needs no cleaning first. Each is one pass
# of the normalizer over the text, hence a short list.
TYPOGRAPHY = "‘’“”—–―…°\u00a0\u202f\u2009\u00ad\u200b\u200d\ufe0fÁáÍíÓóÚúÝýÒòÌìÑñÃãÕõÅåØøß"

# The chat format's template (`dimgpt.data.chat_format`); message texts must be cleaned by the caller,
# as for the tokenizer.
CHAT_TEMPLATE = jinja_template()

# Our names -> transformers' names. Block keys are relative to `blocks.{i}.` / `model.layers.{i}.`.
TOP_LEVEL_NAMES = {
	"token_embedding.weight": "model.embed_tokens.weight",
	"final_norm.weight": "model.norm.weight",
	"final_linear.weight": "lm_head.weight",
}
BLOCK_NAMES = {
	"norm_1.weight": "input_layernorm.weight",
	"attention.query.weight": "self_attn.q_proj.weight",
	"attention.key.weight": "self_attn.k_proj.weight",
	"attention.value.weight": "self_attn.v_proj.weight",
	"attention.projection.weight": "self_attn.o_proj.weight",
	"norm_2.weight": "post_attention_layernorm.weight",
	# SwiGLU: linear_3(silu(linear_1 h) * linear_2 h) == down_proj(silu(gate_proj h) * up_proj h)
	"feed_forward.linear_1.weight": "mlp.gate_proj.weight",
	"feed_forward.linear_2.weight": "mlp.up_proj.weight",
	"feed_forward.linear_3.weight": "mlp.down_proj.weight",
}


def half_rotation_order(n_heads: int, head_dim: int) -> torch.Tensor:
	"""Row order taking each head from adjacent-pair RoPE (2k, 2k+1) to half rotation (k, k + head_dim/2)."""
	within_head = torch.cat([torch.arange(0, head_dim, 2), torch.arange(1, head_dim, 2)])
	return (torch.arange(n_heads)[:, None] * head_dim + within_head).flatten()


def hf_config(config: ModelConfig, dtype: torch.dtype = torch.float32, tied: bool = True) -> dict:
	"""The `config.json` of the `MistralForCausalLM` that computes what a `Transformer(config)` computes."""
	dtype_name = str(dtype).removeprefix("torch.")
	return {
		"architectures": ["MistralForCausalLM"],
		"model_type": "mistral",
		"vocab_size": config.vocab_size,
		"hidden_size": config.dim,
		"intermediate_size": config.hidden_dim,
		"num_hidden_layers": config.n_layers,
		"num_attention_heads": config.n_heads,
		"num_key_value_heads": config.n_kv_heads,
		"head_dim": config.head_dim,
		"hidden_act": "silu",
		"max_position_embeddings": config.context_length,
		"sliding_window": config.window + 1,  # transformers counts the query itself
		"rope_theta": config.rope_theta,  # read by transformers 4.x
		"rope_parameters": {"rope_type": "default", "rope_theta": config.rope_theta},  # read by 5.x
		"rms_norm_eps": config.norm_eps,
		"initializer_range": config.init_std,
		"attention_dropout": 0.0,
		"tie_word_embeddings": tied,
		"use_cache": True,
		"bos_token_id": START_OF_TEXT,
		"eos_token_id": END_OF_TEXT,
		"pad_token_id": PADDING,
		"dtype": dtype_name,
		"torch_dtype": dtype_name,  # the name transformers 4.x reads
	}


def hf_state_dict(state_dict: dict[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
	"""Our weights under transformers' Mistral names, query/key rows in the half-rotation RoPE layout.

	The output layer is left out when it is tied to the embedding (transformers re-ties it on load).
	"""
	expected = set(TOP_LEVEL_NAMES) | {f"blocks.{i}.{name}" for i in range(config.n_layers) for name in BLOCK_NAMES}
	missing, unexpected = expected - set(state_dict), set(state_dict) - expected
	if missing or unexpected:
		raise BadFileError(
			"these weights are not a DimensionGPT model of the given config: "
			f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
		)
	query_order = half_rotation_order(config.n_heads, config.head_dim)
	key_order = half_rotation_order(config.n_kv_heads, config.head_dim)

	out = {}
	for name, tensor in state_dict.items():
		tensor = tensor.detach().cpu()
		if name.startswith("blocks."):
			_, layer, rest = name.split(".", 2)
			if rest == "attention.query.weight":
				tensor = tensor[query_order]
			elif rest == "attention.key.weight":
				tensor = tensor[key_order]
			out[f"model.layers.{layer}.{BLOCK_NAMES[rest]}"] = tensor.contiguous()
		else:
			out[TOP_LEVEL_NAMES[name]] = tensor.contiguous()
	if is_tied(state_dict):
		del out["lm_head.weight"]
	return out


def is_tied(state_dict: dict[str, torch.Tensor]) -> bool:
	"""Whether the output layer is the embedding (always so in the release and in our training)."""
	return torch.equal(state_dict["final_linear.weight"], state_dict["token_embedding.weight"])


def generation_config(config: ModelConfig) -> dict:
	"""`generation_config.json`: our sampler's chat-mode rules and default settings, where transformers has them.

	Generation stops at ⮜end-of-text⮞ or ⮜user⮞ (the end of an answer) and never emits the other control
	tokens but ⮜tab⮞ and ⮜new-line⮞ (text), as `dimgpt.sampling.ChatSession`; temperature, top-k, top-p and
	min-p are those of our default "standard" profile, which follows transformers' rules. Its repetition
	penalty (a recency-weighted one) has no equivalent in transformers and is left out.
	"""
	stops = list(ANSWER_ENDS)
	standard = SamplingConfig.for_profile("standard")
	return {
		"bos_token_id": START_OF_TEXT,
		"eos_token_id": stops,
		"pad_token_id": PADDING,
		"suppress_tokens": banned_tokens(stops),
		"do_sample": True,
		"temperature": standard.temperature,
		"top_p": standard.top_p,
		"top_k": standard.top_k,
		**({"min_p": standard.min_p} if standard.min_p else {}),
		# transformers' own default is 20 new tokens (with a warning); ours is a full answer
		"max_new_tokens": standard.max_new_tokens,
	}


def cleaning_normalizer() -> list[dict]:
	"""`tokenizers` normalizer steps that do what `clean` does on text made of the kept characters,
	`TYPOGRAPHY` and the sequences of the release's rules. Other characters (transliteration) need `clean` first.
	"""

	def replace(pattern: dict, content: str) -> dict:
		return {"type": "Replace", "pattern": pattern, "content": content}

	# The steps of `clean`, in its order, from its own tables (a Replace is a str.replace: left to right,
	# no overlap), less one: the transliteration of a typed ①…⑱ (step 3). Cleaned text holds these for
	# flags, and cleaned text must come out of this normalizer unchanged; a typed ① (rare) needs `clean`.
	return [
		replace({"String": "\r"}, ""),
		*(replace({"String": key}, value) for key, value in SEQUENCE_RULES if key not in CIRCLED),
		*(replace({"String": char}, transliterate(char)) for char in TYPOGRAPHY),
		replace({"Regex": " +\n"}, "\n"),  # spaces before a newline, then tabs (" \t\n" keeps its space)
		replace({"Regex": "\t+\n"}, "\n"),
		replace({"Regex": "\n{3,}"}, "\n\n"),
		replace({"Regex": "\\A[ \t\n]+|[ \t\n]+\\z"}, ""),  # strip
	]


def _checked_tokenizer(tokenizer: Tokenizer | str | Path, vocab_size: int | None) -> Tokenizer:
	"""The tokenizer (loaded if a path), refused if the model has fewer token slots than it has tokens."""
	name = "the tokenizer" if isinstance(tokenizer, Tokenizer) else str(tokenizer)
	if not isinstance(tokenizer, Tokenizer):
		tokenizer = Tokenizer.load(tokenizer)
	if vocab_size is not None:
		runs.check_vocab(tokenizer.vocab_size, vocab_size, name, "the model")
	return tokenizer


def export_tokenizer(
	tokenizer: Tokenizer | str | Path, out_dir: str | Path, context_length: int, vocab_size: int | None = None
) -> None:
	"""Write `tokenizer.json` and the files `transformers.AutoTokenizer.from_pretrained(out_dir)` reads.

	On cleaned text (`dimgpt.data.cleaning.clean`) it gives our ids, and `decode(ids, skip_special_tokens=True)`
	gives our `Tokenizer.decode(ids)`; its normalizer cleans the common path only (`cleaning_normalizer`).
	"""
	tokenizer = _checked_tokenizer(tokenizer, vocab_size)
	out_dir = Path(out_dir)
	path = out_dir / "tokenizer.json"
	tokenizer.save_hf(path)
	data = json.loads(path.read_text(encoding="utf-8"))
	data["model"]["max_input_chars_per_word"] = LONGEST_WORD
	# Cleaning first, then the tokenizer's own steps (tab and newline to their control tokens).
	own = [data["normalizer"]] if data.get("normalizer") else []
	data["normalizer"] = {"type": "Sequence", "normalizers": [*cleaning_normalizer(), *own]}
	# All control tokens are added tokens, so that chat-formatted strings map to them (cleaned text never
	# holds their brackets). Tab and new-line are text, not special: `skip_special_tokens` keeps them.
	data["added_tokens"] = [
		{
			"id": i,
			"content": token,
			"single_word": False,
			"lstrip": False,
			"rstrip": False,
			"normalized": i in (TAB, NEW_LINE),  # the normalizer writes them, from \t and \n
			"special": i not in (TAB, NEW_LINE),
		}
		for i, token in enumerate(CONTROL_TOKENS)
	]
	# Decoding: tokens are glued as they are (spaces live inside tokens), control tokens back to text.
	replacements = [(CONTROL_TOKENS[TAB], "\t"), (CONTROL_TOKENS[NEW_LINE], "\n"), *ENCODED_EMOJI.items()]
	data["decoder"] = {
		"type": "Sequence",
		"decoders": [
			*({"type": "Replace", "pattern": {"String": old}, "content": new} for old, new in replacements),
			{"type": "Fuse"},
		],
	}
	_write_json(path, data)

	special = {
		"bos_token": CONTROL_TOKENS[START_OF_TEXT],
		"eos_token": CONTROL_TOKENS[END_OF_TEXT],
		"pad_token": CONTROL_TOKENS[PADDING],
		"unk_token": CONTROL_TOKENS[UNKNOWN],
	}
	tokenizer_config = {
		"tokenizer_class": "PreTrainedTokenizerFast",
		**special,
		"model_max_length": context_length,
		"clean_up_tokenization_spaces": False,
		"add_bos_token": False,
		"add_eos_token": False,
		"chat_template": CHAT_TEMPLATE,
	}
	_write_json(out_dir / "tokenizer_config.json", tokenizer_config)
	_write_json(out_dir / "special_tokens_map.json", special)


def export_hf(
	model_or_path: Transformer | str | Path,
	out_dir: str | Path,
	tokenizer: Tokenizer | str | Path | None = None,
) -> Path:
	"""Write a `transformers` `MistralForCausalLM` checkpoint of our model to `out_dir`.

	model_or_path: a `Transformer`, or anything `load_model` reads (a checkpoint directory, a
	`.safetensors` file, a raw DimensionGPT state_dict `.pt`), or a run directory (its best checkpoint,
	else its last). tokenizer: a `Tokenizer` or a `vocab.txt` path; None exports the weights only.
	"""
	from dimgpt.model.loading import load_model

	if isinstance(model_or_path, str | Path):
		model = load_model(runs.checkpoint(model_or_path))
	else:
		model = model_or_path
		for _ in range(2):  # unwrap torch.compile and DistributedDataParallel, in either order
			model = getattr(model, "_orig_mod", getattr(model, "module", model))
	config: ModelConfig = model.config
	state_dict = model.state_dict()
	tensors = hf_state_dict(state_dict, config)
	dtype = tensors["model.embed_tokens.weight"].dtype
	if tokenizer is not None:  # checked before anything is written
		tokenizer = _checked_tokenizer(tokenizer, config.vocab_size)

	out_dir = Path(out_dir)
	out_dir.mkdir(parents=True, exist_ok=True)
	_write_json(out_dir / "config.json", hf_config(config, dtype, tied=is_tied(state_dict)))
	write_safetensors(tensors, out_dir / "model.safetensors", metadata={"format": "pt"})
	_write_json(out_dir / "generation_config.json", generation_config(config))
	if tokenizer is not None:
		export_tokenizer(tokenizer, out_dir, config.context_length, vocab_size=config.vocab_size)
	return out_dir


def export_command(
	model_path: str | Path, out_dir: str | Path, vocab: str | Path | None = None, checkpoint: str = "auto"
) -> Path:
	"""`python -m dimgpt export-hf`: resolve the checkpoint and its vocab.txt, export, say where it went."""
	weights = runs.checkpoint(model_path, checkpoint)
	if vocab is None:
		vocab = runs.find_vocab(weights)
		if vocab is None:
			raise NotFoundError(
				f"no vocab.txt found next to {weights} or in its run directory: "
				"pass the model's vocabulary with --vocab PATH/vocab.txt"
			)
	print(f"model:     {weights}")
	print(f"tokenizer: {vocab}")
	out_dir = export_hf(weights, out_dir, tokenizer=vocab)
	print(f"wrote a transformers MistralForCausalLM checkpoint to {out_dir}")
	print("load it with transformers.AutoModelForCausalLM / AutoTokenizer.from_pretrained; clean() text first")
	return out_dir


def _write_json(path: Path, data: dict) -> None:
	path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
