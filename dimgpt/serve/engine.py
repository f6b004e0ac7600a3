"""Continuous batching: one thread decodes every running request together, one token per step.

A request waits in a bounded queue until a row is free (`max_batch` rows). Between two steps the
engine drops the rows that finished or whose client left, then admits waiting requests: their
prompts run together through a KVCache, right-padded, so that each sequence sits at the positions it
would have alone; each first token is drawn from that forward (and sent at once), and each sequence
moves into a row of the shared RowCache. A step then feeds the last token of every row in one batched
forward. Prefills go first: requests that arrived during a prefill are admitted before the next step,
so a burst of requests (clients that sent together) waits for prefills only, not for decoding steps
in between (the running rows wait one prefill more for their next token).

Each row draws with its own settings (`choose_tokens`, rows grouped by settings) and, when it has a
seed, its own generator, so a seeded or greedy request gives the tokens it gives alone whatever
runs beside it (up to float rounding of batched matrix products). Text goes out as it is decoded,
minus any tail that could still become a stop string.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from dimgpt.data.tokenizer import END_OF_TEXT
from dimgpt.model.kv_cache import RowCache
from dimgpt.sampling import Sampler, SamplingConfig, choose_tokens


class QueueFull(Exception):
	"""The waiting queue holds `max_queue` requests already."""


@dataclass
class Output:
	"""What the engine sends a request: new text, and at the end why it ended and the token counts."""

	text: str = ""
	finish_reason: str | None = None  # "stop", "length", "cancelled", "error"
	prompt_tokens: int = 0
	completion_tokens: int = 0
	error: str | None = None


@dataclass
class Request:
	"""One generation: prompt ids, settings, stop tokens and strings; `emit` receives its Outputs (engine thread)."""

	prompt: list[int]
	settings: SamplingConfig
	emit: Callable[[Output], None]
	stop_ids: tuple[int, ...] = (END_OF_TEXT,)
	stop: tuple[str, ...] = ()
	cancelled: bool = False
	finished: bool = False


@dataclass
class _Row:
	request: Request
	generator: torch.Generator | None
	key: tuple  # rows with equal keys draw together
	tokens: list[int] = field(default_factory=list)
	text: str = ""
	sent: int = 0  # characters of `text` already emitted


class Engine:
	"""Runs requests on a Sampler's model and tokenizer in a background thread (see the module doc)."""

	def __init__(
		self,
		sampler: Sampler,
		max_batch: int = 16,
		max_queue: int = 64,
		after_forward: Callable[[], None] | None = None,
	) -> None:
		"""`after_forward`, if given, runs on the engine thread after each prefill and step (and at the end),
		once the rows that finished are dropped: EngineProcess sends their outputs in one go."""
		if max_batch < 1 or max_queue < 0:
			raise ValueError("max_batch must be at least 1 and max_queue at least 0")
		self.sampler = sampler
		self.tokenizer = sampler._tokenizer()
		self.model = sampler.model
		self.max_batch, self.max_queue = max_batch, max_queue
		config = self.model.config
		self.context = config.context_length
		weight = self.model.token_embedding.weight
		self.device = weight.device
		self.cache = RowCache(config, max_batch, weight.device, weight.dtype)
		# The last `context` tokens of each row, right-aligned, for the repetition penalty.
		self.history = torch.full((max_batch, self.context), END_OF_TEXT, dtype=torch.long, device=weight.device)
		self.history_real = torch.zeros(max_batch, self.context, dtype=torch.bool, device=weight.device)
		self.last_tokens = torch.zeros(max_batch, dtype=torch.long, device=weight.device)
		self.rows: list[_Row] = []
		self.busiest_step = 0  # most rows decoded in one step so far
		self._banned: dict[tuple[int, ...], torch.Tensor] = {}
		self._waiting: deque[Request] = deque()
		self._lock = threading.Condition()
		self._closed = False
		self._after_forward = after_forward or (lambda: None)
		self._thread = threading.Thread(target=self._loop, name="dimgpt-engine", daemon=True)
		self._thread.start()

	# --- the server's side

	def submit(self, request: Request) -> None:
		"""Queue `request`; raises QueueFull when `max_queue` requests wait already."""
		with self._lock:
			if self._closed:
				raise RuntimeError("the engine is closed")
			free_rows = self.max_batch - len(self.rows)
			if len(self._waiting) >= free_rows + self.max_queue:
				raise QueueFull
			self._waiting.append(request)
			self._lock.notify()

	def cancel(self, request: Request) -> None:
		"""The client left: drop the request from the queue now, or free its row before the next step."""
		with self._lock:
			request.cancelled = True
			if request in self._waiting:
				self._waiting.remove(request)
				self._finish_quietly(request)
			self._lock.notify()

	def stats(self) -> dict[str, int]:
		with self._lock:
			return {
				"running": len(self.rows),
				"waiting": len(self._waiting),
				"max_batch": self.max_batch,
				"busiest_step": self.busiest_step,
			}

	def close(self) -> None:
		with self._lock:
			self._closed = True
			self._lock.notify()
		self._thread.join(timeout=10)

	# --- the engine thread

	def _loop(self) -> None:
		while True:
			with self._lock:
				while not self._closed and not self._waiting and not self.rows:
					self._lock.wait()
				if self._closed:
					break
				admitted = []
				while self._waiting and len(self.rows) + len(admitted) < self.max_batch:
					admitted.append(self._waiting.popleft())
			try:
				with torch.inference_mode():
					if admitted:
						self._start(admitted)
						self._drop_finished()
						self._after_forward()  # the first tokens go out now, not after the next step
						if self._waiting and len(self.rows) < self.max_batch:
							continue  # requests that came during this prefill start before the next step
					if self.rows:
						self._step()
						self._drop_finished()
			except Exception as error:  # a failed step fails its requests, not the server
				self._fail_all(f"{type(error).__name__}: {error}")
			finally:
				self._after_forward()
		for row in list(self.rows):
			self._finish_quietly(row.request)
		self._after_forward()

	def _start(self, requests: list[Request]) -> None:
		"""Run the prompts, draw their first tokens and give them rows (unless that token ends them).

		Prompts up to window + 1 tokens run together, right-padded (see RowCache); longer ones alone.
		"""
		requests = [r for r in requests if not r.cancelled or self._finish_quietly(r)]
		size = self.cache.size
		short = [r for r in requests if len(r.prompt) <= size]
		for group in ([short] if short else []) + [[r] for r in requests if len(r.prompt) > size]:
			lengths = [len(r.prompt) for r in group]
			width = max(lengths)
			prompts = torch.tensor(
				[r.prompt + [END_OF_TEXT] * (width - len(r.prompt)) for r in group],
				dtype=torch.long,
				device=self.device,
			)
			# A short batch's cache holds its own width only: the prefill attends over fewer empty slots
			cache = self.model.make_cache(len(group), max_tokens=width)
			# Only each prompt's last position is needed: the output layer nowhere else (much of a prefill's cost)
			last = (torch.arange(len(group), device=self.device), torch.tensor(lengths, device=self.device) - 1)
			logits = self.model(prompts, cache, select=last).float()
			first = self.cache.add(cache, lengths)
			self.rows += [self._row(r) for r in group]
			# The history of each new row: its prompt's last `context` tokens, right-aligned (filled from one
			# flat list: a [rows, context] nested list cost more than the rest of a prefill's bookkeeping).
			rows = slice(first, first + len(group))
			recent = torch.tensor([t for r in group for t in r.prompt[-self.context :]], device=self.device)
			kept = torch.tensor([min(n, self.context) for n in lengths], device=self.device)
			real = torch.arange(self.context, device=self.device) >= self.context - kept[:, None]
			self.history_real[rows] = real
			self.history[rows] = END_OF_TEXT
			self.history[rows].masked_scatter_(real, recent)  # row by row, in order: each row's tokens at its end
			self._accept(rows, self._choose(rows, logits))

	def _row(self, request: Request) -> _Row:
		settings = request.settings
		generator = None
		if settings.seed is not None and settings.temperature > 0:
			generator = torch.Generator(device=self.device).manual_seed(settings.seed)
		if settings.temperature > 0:
			key = (settings.temperature, settings.top_k, settings.top_p, settings.repetition_penalty, request.stop_ids)
		else:
			key = (0.0, 0, 1.0, settings.repetition_penalty, request.stop_ids)
		return _Row(request, generator, (*key, id(generator)) if generator else key)

	def _step(self) -> None:
		n = len(self.rows)
		self.busiest_step = max(self.busiest_step, n)
		logits = self.model(self.last_tokens[:n, None], self.cache)[:, -1].float()
		self._accept(slice(0, n), self._choose(slice(0, n), logits))

	def _choose(self, rows: slice, logits: torch.Tensor) -> torch.Tensor:
		"""The next token of each row of `rows` from its logits, one draw per group of equal settings."""
		tokens = torch.empty(len(logits), dtype=torch.long, device=logits.device)
		groups: dict[tuple, list[int]] = {}
		for i, row in enumerate(self.rows[rows]):
			groups.setdefault(row.key, []).append(i)
		history, real = self.history[rows], self.history_real[rows]
		for members in groups.values():
			first = self.rows[rows.start + members[0]]
			index = slice(None) if len(members) == len(logits) else torch.tensor(members, device=logits.device)
			tokens[index] = choose_tokens(
				logits[index],
				first.request.settings,
				self._banned_mask(first.request.stop_ids),
				history[index],
				real[index],
				self.context,
				first.generator,
			)
		return tokens

	def _accept(self, index: slice, tokens: torch.Tensor) -> None:
		"""Record the drawn tokens of rows `index` (history, next input) and send out their text."""
		history, real = self.history[index], self.history_real[index]
		history[:, :-1] = history[:, 1:].clone()
		real[:, :-1] = real[:, 1:].clone()
		history[:, -1] = tokens
		real[:, -1] = True
		self.last_tokens[index] = tokens
		for row, token in zip(self.rows[index], tokens.tolist()):
			self._push(row, token)

	def _push(self, row: _Row, token: int) -> None:
		request = row.request
		if request.cancelled or request.finished:
			return
		if token in request.stop_ids:
			return self._finish(row, "stop")
		row.tokens.append(token)
		before = len(row.text)
		row.text += self.tokenizer.decode([token])
		if request.stop:
			longest = max(map(len, request.stop))
			start = max(0, before - longest + 1)
			found = [i for i in (row.text.find(s, start) for s in request.stop) if i >= 0]
			if found:
				row.text = row.text[: min(found)]
				return self._finish(row, "stop")
		if len(row.tokens) >= request.settings.max_new_tokens:
			return self._finish(row, "length")
		end = len(row.text) - _held_back(row.text, request.stop)
		if end > row.sent:
			request.emit(Output(text=row.text[row.sent : end]))
			row.sent = end

	def _finish(self, row: _Row, reason: str) -> None:
		request = row.request
		request.finished = True
		request.emit(
			Output(
				text=row.text[row.sent :],
				finish_reason=reason,
				prompt_tokens=len(request.prompt),
				completion_tokens=len(row.tokens),
			)
		)
		row.sent = len(row.text)

	def _finish_quietly(self, request: Request) -> bool:
		"""End a request whose client left (nobody reads it, but the consumer may be waiting). False."""
		if not request.finished:
			request.finished = True
			request.emit(Output(finish_reason="cancelled", prompt_tokens=len(request.prompt)))
		return False

	def _drop_finished(self) -> None:
		"""Free the rows of finished and cancelled requests (a freed row takes the last row's place)."""
		i = 0
		while i < len(self.rows):
			request = self.rows[i].request
			if request.cancelled or request.finished:
				self._finish_quietly(request)
				self._remove(i)
			else:
				i += 1

	def _remove(self, i: int) -> None:
		last = len(self.rows) - 1
		self.cache.remove(i)
		if i != last:
			self.history[i] = self.history[last]
			self.history_real[i] = self.history_real[last]
			self.last_tokens[i] = self.last_tokens[last]
			self.rows[i] = self.rows[last]
		self.rows.pop()

	def _fail_all(self, message: str) -> None:
		for row in self.rows:
			if not row.request.finished:
				row.request.finished = True
				row.request.emit(Output(finish_reason="error", error=message, prompt_tokens=len(row.request.prompt)))
		while self.rows:
			self._remove(len(self.rows) - 1)

	def _banned_mask(self, stop_ids: Sequence[int]) -> torch.Tensor:
		key = tuple(stop_ids)
		if key not in self._banned:
			self._banned[key] = self.sampler.banned_mask(stop_ids)
		return self._banned[key]


def _held_back(text: str, stops: Sequence[str]) -> int:
	"""Length of the longest end of `text` that begins some stop string (not sent until resolved)."""
	held = 0
	for stop in stops:
		for k in range(min(len(stop) - 1, len(text)), held, -1):
			if text.endswith(stop[:k]):
				held = k
				break
	return held
