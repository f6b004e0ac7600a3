"""Generation: the sampler (KV cache, temperature, top-k, top-p, DimensionGPT repetition penalty) and chat sessions.

Token ids in, token ids out in `Sampler.steps` / `Sampler.generate_ids`; text in, text out (with
streaming) in `Sampler.generate` and `ChatSession.ask`.

Repetition penalty (as released): the log-probability of a token is multiplied by
`1 + penalty * (context - age) / context` for each of its occurrences among the last `context`
tokens (age 0 = the latest token), so a recent repeat is pushed down more than an old one. Then
temperature (0 = greedy), top-k, top-p. Control tokens other than the stop tokens are never sampled,
except ⮜tab⮞ and ⮜new-line⮞, which are text. Ids past the tokenizer's vocabulary (spare slots of a
larger model vocabulary) are never sampled either.

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

import torch

from dimgpt import runs
from dimgpt.data import chat_format
from dimgpt.data.tokenizer import (
	CONTROL_TOKENS,
	END_OF_TEXT,
	NEW_LINE,
	START_OF_TEXT,
	TAB,
	Tokenizer,
)
from dimgpt.device import inference_dtype, pick_device
from dimgpt.errors import NotFoundError
from dimgpt.model.transformer import Transformer

TEXT_CONTROL_TOKENS = (TAB, NEW_LINE)  # tab and newline in text: control tokens that may be sampled


def banned_tokens(stop_ids: Sequence[int]) -> list[int]:
	"""The control tokens never sampled: all but the stop tokens, ⮜tab⮞ and ⮜new-line⮞."""
	return [c for c in range(len(CONTROL_TOKENS)) if c not in stop_ids and c not in TEXT_CONTROL_TOKENS]


@dataclass(frozen=True)
class SamplingConfig:
	"""Sampling settings; the defaults are those of the DimensionGPT testing notebook."""

	temperature: float = 0.5  # 0: greedy
	top_k: int = 0  # 0: off
	top_p: float = 0.9  # 1.0: off
	repetition_penalty: float = 1.0  # 0.0: off
	max_new_tokens: int = 512
	seed: int | None = None


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


def filter_top_k_top_p(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
	"""-inf outside the top k tokens and outside the smallest set whose probability reaches top_p."""
	if 0 < top_k < logits.shape[-1]:
		kth = logits.topk(top_k, dim=-1).values[:, -1:]
		logits = logits.masked_fill(logits < kth, float("-inf"))
	if top_p < 1.0:
		sorted_logits, order = logits.sort(dim=-1, descending=True)
		probs = sorted_logits.softmax(dim=-1)
		before = probs.cumsum(dim=-1) - probs  # mass of the tokens ranked above
		remove = before >= top_p
		remove[:, 0] = False
		logits = logits.masked_fill(remove.scatter(1, order, remove), float("-inf"))
	return logits


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

	Penalty, banned tokens, then greedy or temperature, top-k, top-p and a draw from `generator`.
	`history_real` marks the real tokens of a left-padded history (None: all real).
	"""
	scores = logits  # log-probabilities up to a constant per row, which nothing below sees
	if settings.repetition_penalty:
		scores = apply_repetition_penalty(
			logits.log_softmax(dim=-1), history, settings.repetition_penalty, context, history_real
		)
	scores = scores.masked_fill(banned, float("-inf"))
	if settings.temperature <= 0:
		return scores.argmax(dim=-1)
	scores = filter_top_k_top_p(scores / settings.temperature, settings.top_k, settings.top_p)
	return torch.multinomial(scores.softmax(dim=-1), 1, generator=generator)[:, 0]


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
