"""Generation: the sampler (KV cache, two sampling profiles, DimensionGPT repetition penalty) and chat sessions.

Token ids in, token ids out in `Sampler.steps` / `Sampler.generate_ids`; text in, text out (with
streaming) in `Sampler.generate` and `ChatSession.ask`.

Two sampling profiles (`SamplingConfig.profile`; `SamplingConfig.for_profile(name)` gives each one's
settings; docs/dimensiongpt.md, "Sampling"):

- "standard" (the default): what `transformers` does. Control tokens other than the stop tokens, ⮜tab⮞
  and ⮜new-line⮞ are removed first (its `suppress_tokens`), then temperature (0 = greedy), top-k,
  top-p (the smallest set of tokens whose probability reaches top_p: the token that reaches it is kept)
  and min-p (tokens under min_p times the top token's probability go). Default settings: temperature
  0.5, top-p 0.9 and repetition penalty 1.0, the values the release's testing notebook asks for.
- "dimensiongpt": what the release's testing notebook really ran. Its `generate` passes its arguments
  to `sample` shifted by one place, so it sampled at temperature 0.9, top-p 1.0, no repetition penalty
  (the profile's settings), with the chat rule on: the probability of ⮜user⮞ is added to ⮜end-of-text⮞.
  Its steps: penalty on log-probabilities; greedy (temperature 0) takes the argmax here, before any
  control token is removed; temperature; softmax; ⮜user⮞ into ⮜end-of-text⮞; the control tokens but
  ⮜tab⮞, ⮜new-line⮞ and ⮜end-of-text⮞ removed; its top-p boundary: sorted by probability, the tokens
  before the one whose cumulative probability reaches max(top_p, p_top + 1e-6) are kept (that token
  goes; with top-p 1.0 in float32 this drops the far tail, whose sum rounds to nothing).
  `top_p_rule` picks either boundary in either profile.

Repetition penalty (as released, both profiles): the log-probability of a token is multiplied by
`1 + penalty * (context - age) / context` for each of its occurrences among the last `context`
tokens (age 0 = the latest token), so a recent repeat is pushed down more than an old one. Ids past the
tokenizer's vocabulary (spare slots of a larger model vocabulary) are never sampled.

Chat format (`dimgpt.data.chat_format`): `⮜start-of-text⮞ [⮜system⮞ preprompt] ⮜user⮞ question
⮜assistant⮞ answer ⮜user⮞ …`. An answer ends at the model's next ⮜user⮞ or ⮜end-of-text⮞ (neither is
shown); outside chat, generation stops at ⮜end-of-text⮞. The history is trimmed, oldest turns first, so that the
prompt leaves room for the answer inside the context.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from dimgpt import runs
from dimgpt.data import chat_format
from dimgpt.data.tokenizer import (
	ASSISTANT,
	CONTROL_TOKENS,
	END_OF_TEXT,
	HUMAN,
	NEW_LINE,
	PADDING,
	START_OF_TEXT,
	SYSTEM,
	TAB,
	UNKNOWN,
	USER,
	Tokenizer,
)
from dimgpt.device import inference_dtype, pick_device
from dimgpt.errors import NotFoundError, UsageError
from dimgpt.model.transformer import Transformer

TEXT_CONTROL_TOKENS = (TAB, NEW_LINE)  # tab and newline in text: control tokens that may be sampled


def banned_tokens(stop_ids: Sequence[int]) -> list[int]:
	"""The control tokens never sampled: all but the stop tokens, ⮜tab⮞ and ⮜new-line⮞."""
	return [c for c in range(len(CONTROL_TOKENS)) if c not in stop_ids and c not in TEXT_CONTROL_TOKENS]


PROFILES = ("standard", "dimensiongpt")
TOP_P_RULES = ("standard", "dimensiongpt")
# The control tokens the release's sampler never emits (in its "dimensiongpt" profile here).
RELEASE_BANNED = (UNKNOWN, PADDING, START_OF_TEXT, HUMAN, SYSTEM, USER, ASSISTANT)


@dataclass(frozen=True)
class SamplingConfig:
	"""Sampling settings (see the module doc); the defaults are the "standard" profile's."""

	temperature: float = 0.5  # 0: greedy
	top_k: int = 0  # 0: off
	top_p: float = 0.9  # 1.0: off with the standard rule
	min_p: float = 0.0  # 0: off
	repetition_penalty: float = 1.0  # DimensionGPT's; 0.0: off
	max_new_tokens: int = 512
	seed: int | None = None
	profile: str = "standard"  # "standard" or "dimensiongpt"
	top_p_rule: str | None = None  # "standard" or "dimensiongpt" boundary; None: the profile's

	def __post_init__(self) -> None:
		if self.profile not in PROFILES:
			raise UsageError(f"sampling profile {self.profile!r} does not exist: use one of {', '.join(PROFILES)}")
		if self.top_p_rule is not None and self.top_p_rule not in TOP_P_RULES:
			raise UsageError(f"top-p rule {self.top_p_rule!r} does not exist: use one of {', '.join(TOP_P_RULES)}")
		if self.temperature < 0 or not 0 < self.top_p <= 1 or not 0 <= self.min_p <= 1 or self.top_k < 0:
			raise UsageError(
				f"sampling settings out of range (temperature {self.temperature}, top_k {self.top_k}, top_p "
				f"{self.top_p}, min_p {self.min_p}): use temperature ≥ 0, top_k ≥ 0, 0 < top_p ≤ 1, 0 ≤ min_p ≤ 1"
			)
		if self.profile == "dimensiongpt" and (self.top_k or self.min_p):
			raise UsageError(
				"the dimensiongpt profile reproduces the release's sampler, which has no top-k or min-p: "
				"set them to 0 or use the standard profile"
			)

	@property
	def boundary(self) -> str:
		"""The top-p boundary rule in force."""
		return self.top_p_rule or self.profile

	@classmethod
	def for_profile(cls, profile: str = "standard", **changes: object) -> SamplingConfig:
		"""A profile's settings, with `changes` (e.g. max_new_tokens=64) on top."""
		if profile not in PROFILE_SETTINGS:
			raise UsageError(f"sampling profile {profile!r} does not exist: use one of {', '.join(PROFILES)}")
		return replace(PROFILE_SETTINGS[profile], **changes)


PROFILE_SETTINGS = {
	"standard": SamplingConfig(),
	# What the release's notebook ran: generate(temperature=0.5, top_p=0.9, no_repeat=1.0) reached its
	# sampler shifted by one place, as (chat rule on, temperature 0.9, top-p 1.0, penalty 0).
	"dimensiongpt": SamplingConfig(temperature=0.9, top_p=1.0, repetition_penalty=0.0, profile="dimensiongpt"),
}


@dataclass
class Step:
	"""One generation step of a batch: the sampled tokens, the model's raw logits, which rows are done."""

	tokens: torch.Tensor  # [B] int64
	logits: torch.Tensor  # [B, vocab] float32, before penalty and temperature
	stopped: torch.Tensor  # [B] bool: this step's token is a stop token (not part of the output)
	done: torch.Tensor  # [B] bool: the row had stopped before this step (its token is meaningless)


def apply_repetition_penalty(
	logprobs: torch.Tensor, history: torch.Tensor, penalty: float, context: int, real: torch.Tensor | None = None
) -> torch.Tensor:
	"""DimensionGPT's penalty on log-probabilities [B, V] given the tokens so far [B, L] (see the module doc)."""
	if penalty == 0 or history.shape[1] == 0:
		return logprobs
	recent = history[:, -context:]
	age = torch.arange(recent.shape[1] - 1, -1, -1, device=history.device)
	factors = (1 + penalty * (context - age) / context).to(logprobs.dtype).expand_as(recent).clone()
	if real is not None:
		factors[~real[:, -context:]] = 1.0  # left padding is not text
	scale = torch.ones_like(logprobs).scatter_reduce_(1, recent, factors, reduce="prod")
	return logprobs * scale


def filter_logits(
	logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0, top_p_rule: str = "standard"
) -> torch.Tensor:
	"""-inf on the tokens that top-k, then top-p, then min-p remove (rows of logits [B, V], after temperature).

	top-p "standard" (transformers' rule): the smallest set of likeliest tokens whose probability
	reaches top_p, the token that reaches it included. "dimensiongpt": the release's (`release_top_p`).
	"""
	if 0 < top_k < logits.shape[-1]:
		kth = logits.topk(top_k, dim=-1).values[:, -1:]
		logits = logits.masked_fill(logits < kth, float("-inf"))
	if top_p_rule == "dimensiongpt":
		probs = logits.softmax(dim=-1).float().cpu().numpy()
		kept = torch.from_numpy(np.stack([release_top_p(row, top_p) for row in probs])).to(logits.device)
		logits = logits.masked_fill(~kept, float("-inf"))
	elif top_p < 1.0:
		# Ascending order: the tail whose total probability stays within 1 - top_p goes (never the top token).
		ascending, order = logits.sort(dim=-1)
		remove = ascending.softmax(dim=-1).cumsum(dim=-1) <= 1 - top_p
		remove[:, -1] = False
		logits = logits.masked_fill(remove.scatter(1, order, remove), float("-inf"))
	if min_p > 0:
		probs = logits.softmax(dim=-1)
		remove = probs < min_p * probs.amax(dim=-1, keepdim=True)  # never the top token
		logits = logits.masked_fill(remove, float("-inf"))
	return logits


def release_top_p(probs: np.ndarray, top_p: float) -> np.ndarray:
	"""Which tokens the release's top-p keeps, as it computes it (NumPy float32: the summation order matters).

	Sorted by probability, the tokens before the one whose cumulative probability reaches
	max(top_p, p_top + 1e-6) stay; that one goes. With top_p 1.0 the float32 sum may reach 1 before the
	end: the tail after that point goes too.
	"""
	order = np.argsort(-probs)
	cumulative = np.cumsum(probs[order])
	kept = np.zeros(len(probs), dtype=bool)
	kept[order[: np.searchsorted(cumulative, max(top_p, cumulative[0] + 1e-6))]] = True
	return kept


def choose_tokens(
	logits: torch.Tensor,
	settings: SamplingConfig,
	banned: torch.Tensor,
	history: torch.Tensor,
	history_real: torch.Tensor | None,
	context: int,
	generator: torch.Generator | None = None,
) -> torch.Tensor:
	"""The next token of each row [B] from its float32 logits [B, V] and its tokens so far [B, L].

	`banned` ([V] bool) is the standard profile's (the control tokens but the stops, tab and newline; the
	spare slots past the vocabulary); the dimensiongpt profile bans the release's own set instead.
	`history_real` marks the real tokens of a left-padded history (None: all real).
	"""
	if settings.profile == "dimensiongpt":
		release = banned.clone()  # the spare slots stay banned
		release[: len(CONTROL_TOKENS)] = False
		release[list(RELEASE_BANNED)] = True
		real = history_real if history_real is not None else torch.ones_like(history, dtype=torch.bool)
		chosen = [
			release_choice(row, past[ok].tolist(), settings, context, release.cpu().numpy(), generator)
			for row, past, ok in zip(logits.float().cpu().numpy(), history.cpu(), real.cpu())
		]
		return torch.tensor(chosen, dtype=torch.long, device=logits.device)
	scores = logits
	if settings.repetition_penalty:  # on log-probabilities (logits differ from them by a constant per row)
		scores = apply_repetition_penalty(
			logits.log_softmax(dim=-1), history, settings.repetition_penalty, context, history_real
		)
	scores = scores.masked_fill(banned, float("-inf"))
	if settings.temperature <= 0:
		return scores.argmax(dim=-1)
	scores = filter_logits(
		scores / settings.temperature, settings.top_k, settings.top_p, settings.min_p, settings.boundary
	)
	return torch.multinomial(scores.softmax(dim=-1), 1, generator=generator)[:, 0]


def release_choice(
	logits: np.ndarray,
	history: list[int],
	settings: SamplingConfig,
	context: int,
	banned: np.ndarray,
	generator: torch.Generator | None = None,
) -> int:
	"""One token as the release's sampler picks it, step by step in its NumPy float32 arithmetic.

	`banned`: the release's banned control tokens, and the spare slots past the vocabulary (never chosen).
	"""
	with np.errstate(over="ignore", divide="ignore"):
		exp = np.exp(logits)
		if not np.isfinite(exp).all():  # logits over 88 (never met by a trained model): the shifted softmax
			exp = np.exp(logits - logits.max())
		logprobs = np.log(exp / np.sum(exp))
	if settings.repetition_penalty:  # the latest token first, each occurrence multiplying again
		recent = history[-context:][::-1]
		factors = [1 + settings.repetition_penalty * (context - age) / context for age in range(len(recent))]
		np.multiply.at(logprobs, recent, np.array(factors, dtype=np.float32))
	spare = banned.copy()
	spare[: len(CONTROL_TOKENS)] = False
	if settings.temperature <= 0:  # greedy: the argmax before any control token is removed
		return int(np.argmax(np.where(spare, -np.inf, logprobs)))
	scaled = np.exp(logprobs / np.float32(settings.temperature))
	probs = scaled / np.sum(scaled)
	probs[END_OF_TEXT] += probs[USER]  # the chat rule, which the notebook's call turned on for all generation
	probs[banned] = 0.0
	probs /= np.sum(probs)
	if settings.boundary == "dimensiongpt":
		kept = release_top_p(probs, settings.top_p)
	else:
		with np.errstate(divide="ignore"):
			scores = torch.from_numpy(np.log(probs))[None]
		kept = torch.isfinite(filter_logits(scores, top_p=settings.top_p))[0].numpy()
	probs = np.where(kept, probs, 0.0).astype(np.float32)
	probs /= np.sum(probs)
	device = generator.device if generator is not None else "cpu"
	return int(torch.multinomial(torch.from_numpy(probs).to(device), 1, generator=generator))


class Sampler:
	"""Generates from a Transformer, with a KV cache (or full recomputation, for comparison)."""

	def __init__(self, model: Transformer, tokenizer: Tokenizer | None = None) -> None:
		self.model = model
		self.tokenizer = tokenizer
		# A tokenizer smaller than the model's vocabulary is fine (spare slots, never sampled); larger is not.
		if tokenizer is not None:
			runs.check_vocab(tokenizer.vocab_size, model.config.vocab_size, "the tokenizer", "the model")

	@property
	def device(self) -> torch.device:
		return self.model.token_embedding.weight.device

	def banned_mask(self, stop_ids: Sequence[int]) -> torch.Tensor:
		"""[vocab] bool, True on the ids never sampled: `banned_tokens` and the spare vocabulary slots."""
		banned = torch.zeros(self.model.config.vocab_size, dtype=torch.bool, device=self.device)
		banned[banned_tokens(stop_ids)] = True
		if self.tokenizer is not None:
			banned[self.tokenizer.vocab_size :] = True  # spare slots: no token to decode
		return banned

	@torch.inference_mode()  # no autograd bookkeeping at all: less per-op overhead per token than no_grad
	def steps(
		self,
		prompts: Sequence[Sequence[int]],
		settings: SamplingConfig | None = None,
		stop_ids: Sequence[int] = (END_OF_TEXT,),
		use_cache: bool = True,
	) -> Iterator[Step]:
		"""Yield one `Step` per new token of a batch of prompts (left-padded), until all stop or max_new_tokens."""
		settings = settings or SamplingConfig()
		if not prompts or any(len(p) == 0 for p in prompts):
			raise ValueError("every prompt needs at least one token (start with START_OF_TEXT)")
		model, device = self.model, self.device
		model.eval()
		B, L = len(prompts), max(len(p) for p in prompts)
		tokens = torch.full((B, L), END_OF_TEXT, dtype=torch.long, device=device)
		real = torch.zeros(B, L, dtype=torch.bool, device=device)
		for i, p in enumerate(prompts):
			tokens[i, L - len(p) :] = torch.tensor(list(p), dtype=torch.long)
			real[i, L - len(p) :] = True
		padded = not bool(real.all())
		banned = self.banned_mask(stop_ids)
		stops = torch.tensor(list(stop_ids), dtype=torch.long, device=device)
		generator = None
		if settings.seed is not None:
			generator = torch.Generator(device=device).manual_seed(settings.seed)
		context = model.config.context_length

		cache = model.make_cache(B, L + settings.max_new_tokens) if use_cache else None
		# Every token so far, written in place (no growing concatenation per step).
		history = torch.cat([tokens, tokens.new_empty(B, settings.max_new_tokens)], dim=1)
		history_real = torch.cat([real, real.new_ones(B, settings.max_new_tokens)], dim=1)
		n = L
		done = torch.zeros(B, dtype=torch.bool, device=device)
		rows = torch.arange(B, device=device)  # logits at each row's last position only (`select`)
		for _ in range(settings.max_new_tokens):
			if cache is None:
				if padded:
					raise ValueError("batched prompts of different lengths need the KV cache (use_cache=True)")
				logits = model(history[:, :n], select=(rows, torch.full_like(rows, n - 1)))
			elif n == L:
				logits = model(tokens, cache, real if padded else None, select=(rows, torch.full_like(rows, L - 1)))
			else:
				logits = model(history[:, n - 1 : n], cache)[:, -1]
			logits = logits.float()
			next_tokens = choose_tokens(
				logits, settings, banned, history[:, :n], history_real[:, :n], context, generator
			)
			stopped = torch.isin(next_tokens, stops) & ~done if len(stops) else torch.zeros_like(done)
			yield Step(next_tokens, logits, stopped, done.clone())
			if len(stops):
				done |= stopped
				if bool(done.all()):
					return
			history[:, n] = next_tokens
			n += 1

	def generate_ids(
		self,
		prompts: Sequence[Sequence[int]],
		settings: SamplingConfig | None = None,
		stop_ids: Sequence[int] = (END_OF_TEXT,),
		use_cache: bool = True,
	) -> list[list[int]]:
		"""New token ids of each prompt, stop token excluded."""
		settings = settings or SamplingConfig()
		# Written in place: a list of per-step tensors would cost ~1 KB of bookkeeping per token.
		tokens = torch.zeros(len(prompts), settings.max_new_tokens, dtype=torch.long, device=self.device)
		ended = torch.ones(len(prompts), settings.max_new_tokens + 1, dtype=torch.bool, device=self.device)
		for i, step in enumerate(self.steps(prompts, settings, stop_ids, use_cache)):
			tokens[:, i] = step.tokens
			ended[:, i] = step.stopped | step.done
		ends = ended.int().argmax(dim=1).tolist()  # each row ends at its first stop (argmax: first max)
		return [row[:end] for row, end in zip(tokens.tolist(), ends)]

	def stream_ids(
		self,
		prompt: Sequence[int],
		settings: SamplingConfig | None = None,
		stop_ids: Sequence[int] = (END_OF_TEXT,),
	) -> Iterator[int]:
		"""New token ids of one prompt as they come, stop token excluded."""
		for step in self.steps([prompt], settings, stop_ids):
			if bool(step.stopped[0]):
				return
			yield int(step.tokens[0])

	# --- text

	def _tokenizer(self) -> Tokenizer:
		if self.tokenizer is None:
			raise ValueError("this Sampler has no tokenizer: pass one to work with text")
		return self.tokenizer

	def generate(
		self,
		prompt: str,
		settings: SamplingConfig | None = None,
		*,
		stream: bool | Callable[[str], None] = False,
		line_width: int = 150,
	) -> str:
		"""Continue `prompt` until end-of-text or max_new_tokens; stream=True prints as it goes."""
		tokenizer = self._tokenizer()
		ids = [START_OF_TEXT, *tokenizer.encode(prompt)]
		printer = TextPrinter(tokenizer, stream, line_width) if stream else None
		out = []
		for token in self.stream_ids(ids, settings):
			out.append(token)
			if printer:
				printer(token)
		if printer:
			printer.finish()
		return tokenizer.decode(out)

	def generate_batch(
		self,
		prompts: Sequence[str],
		settings: SamplingConfig | None = None,
	) -> list[str]:
		"""Continue several prompts at once (left-padded batch)."""
		tokenizer = self._tokenizer()
		ids = [[START_OF_TEXT, *tokenizer.encode(p)] for p in prompts]
		return [tokenizer.decode(out) for out in self.generate_ids(ids, settings)]


class TextPrinter:
	"""Writes tokens as text as they come, wrapping lines at a space after `line_width` characters."""

	def __init__(self, tokenizer: Tokenizer, write: bool | Callable[[str], None] = True, line_width: int = 150) -> None:
		self.tokenizer = tokenizer
		self.write = write if callable(write) else _print
		self.line_width = line_width
		self.column = 0

	def __call__(self, token: int) -> None:
		text = self.tokenizer.decode([token])
		if self.line_width and self.column + len(text) > self.line_width and text.startswith(" "):
			text = "\n" + text[1:]
		self.write(text)
		newline = text.rfind("\n")
		self.column = len(text) - newline - 1 if newline >= 0 else self.column + len(text)

	def finish(self) -> None:
		self.write("\n")
		self.column = 0


def _print(text: str) -> None:
	sys.stdout.write(text)
	sys.stdout.flush()


class ChatSession:
	"""A multi-turn conversation in the DimensionGPT chat format, with an optional system preprompt."""

	def __init__(
		self,
		sampler: Sampler,
		system: str | None = None,
		settings: SamplingConfig | None = None,
	) -> None:
		self.sampler = sampler
		self.tokenizer = sampler._tokenizer()
		self.system = system
		self.settings = settings or SamplingConfig()
		self.turns: list[tuple[list[int], list[int]]] = []  # (question ids, answer ids)

	def reset(self) -> None:
		self.turns = []

	def prompt_ids(self, question: str) -> list[int]:
		"""The chat prompt for `question` after the history, trimmed to leave room for the answer."""
		context = self.sampler.model.config.context_length
		budget = context - min(self.settings.max_new_tokens, context // 2)
		head = [START_OF_TEXT]
		if self.system:
			head += chat_format.turn("system", self.tokenizer.encode(self.system))
		head = head[: budget // 2]  # a preprompt never takes more than half the room
		current = [*chat_format.turn("user", self.tokenizer.encode(question)), chat_format.GENERATION_PROMPT]
		if len(head) + len(current) > budget:  # an overlong question keeps its end
			current = chat_format.turn("user", current[len(head) + len(current) - budget + 1 :])
		turns = [chat_format.turn("user", q) + chat_format.turn("assistant", a) for q, a in self.turns]
		while turns and len(head) + sum(map(len, turns)) + len(current) > budget:
			turns.pop(0)
		return head + [t for turn in turns for t in turn] + current

	def ask(self, question: str, *, stream: bool | Callable[[str], None] = False, line_width: int = 150) -> str:
		"""The model's answer to `question` given the conversation so far (remembered for the next turn)."""
		ids = self.prompt_ids(question)
		printer = TextPrinter(self.tokenizer, stream, line_width) if stream else None
		answer = []
		for token in self.sampler.stream_ids(ids, self.settings, stop_ids=chat_format.ANSWER_ENDS):
			answer.append(token)
			if printer:
				printer(token)
		if printer:
			printer.finish()
		self.turns.append((self.tokenizer.encode(question), answer))
		return self.tokenizer.decode(answer)

	def with_settings(self, **changes: object) -> ChatSession:
		"""The same conversation with other sampling settings."""
		session = ChatSession(self.sampler, self.system, replace(self.settings, **changes))
		session.turns = list(self.turns)
		return session


def load_sampler(model: str | Path, vocab: str | Path | None = None, device: str = "auto") -> Sampler:
	"""A Sampler for the weights at `model` (see `load_model`) and its vocab.txt (found when not given)."""
	from dimgpt.model.loading import load_model

	if not Path(model).exists():
		if Path(model).name.startswith("DimensionGPT-"):  # the released weights: say where they go
			raise NotFoundError(
				f"model weights not found: {model}. Put the released DimensionGPT-0.2B.pt or "
				"DimensionGPT-0.2B-Chat.pt in models/ (see models/README.md), or give --model a run directory"
			)
		raise NotFoundError(
			f"no such file or folder: {model} (--model takes a run directory, a checkpoint directory, a "
			".safetensors file or a DimensionGPT .pt file); check the path"
		)
	if vocab is None:
		vocab = runs.find_vocab(model) or Path("data") / runs.VOCAB_FILE
	tokenizer = Tokenizer.load(vocab)
	device = pick_device(device)
	return Sampler(load_model(model, device=device, dtype=inference_dtype(device)), tokenizer)
