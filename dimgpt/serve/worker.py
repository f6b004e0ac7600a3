"""The engine in a process of its own, so that its forward passes do not share the HTTP server's GIL.

In one process the engine thread and the event loop take turns on the GIL: each torch call of a
forward pass gives it up and then waits for it while the loop parses requests and writes chunks. On
the tiny preset (a forward is mostly Python between small kernels), a prefill of 8 prompts that takes
about 4 ms alone took 10-16 ms while a burst of requests came in, and every client waited for it.

`EngineProcess` runs an `Engine` in a spawned child process and has its interface (submit, cancel,
stats, close, max_batch, ...), so the HTTP layer takes either. The model's tensors move to shared
memory and the child maps them: nothing is copied. Requests go down one pipe; the outputs of each
prefill or step come up another in one message, read by a thread that hands them to the requests'
`emit` as the in-process engine thread would. Counts for `stats` live in shared memory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading
from functools import partial
from multiprocessing.connection import Connection
from typing import Any

import torch
import torch.multiprocessing

from dimgpt.config import ModelConfig
from dimgpt.data.tokenizer import Tokenizer
from dimgpt.model.transformer import Transformer
from dimgpt.sampling import Sampler
from dimgpt.serve.engine import Engine, Output, QueueFull, Request

START_TIMEOUT_S = 300  # the child imports torch and maps the weights


def unshareable(sampler: Sampler) -> str | None:
	"""Why the model's weights cannot be shared with a child process here, or None.

	CPU tensors are shared through /dev/shm; containers often give it 64 MB, and a copy past its size
	fails or kills the process (SIGBUS) at the first write, so the size is checked first.
	"""
	needed = sum(p.numel() * p.element_size() for p in sampler.model.parameters() if p.device.type == "cpu")
	if needed == 0 or not os.path.isdir("/dev/shm"):
		return None
	free = shutil.disk_usage("/dev/shm").free
	if free < needed * 1.1:
		return f"/dev/shm has {free / 2**20:,.0f} MiB free, the weights need {needed / 2**20:,.0f} MiB"
	return None


class EngineProcess:
	"""An `Engine` in a child process (see the module doc); `close` ends it."""

	def __init__(self, sampler: Sampler, max_batch: int = 16, max_queue: int = 64) -> None:
		if max_batch < 1 or max_queue < 0:
			raise ValueError("max_batch must be at least 1 and max_queue at least 0")
		self.sampler = sampler
		self.tokenizer = sampler._tokenizer()
		self.model = sampler.model
		self.context = self.model.config.context_length
		self.max_batch, self.max_queue = max_batch, max_queue
		spawn = torch.multiprocessing.get_context("spawn")  # fork is unsafe under threads and CUDA
		down_end, self._down = spawn.Pipe(duplex=False)
		self._up, up_end = spawn.Pipe(duplex=False)
		self._counts = spawn.Array("q", 3, lock=False)  # running, waiting, busiest step (written by the child)
		self._process = spawn.Process(
			target=_child,
			args=(_pack(sampler), max_batch, max_queue, torch.get_num_threads(), down_end, up_end, self._counts),
			name="dimgpt-engine",
			daemon=True,
		)
		self._process.start()
		down_end.close()
		up_end.close()
		try:
			ready = self._up.recv() if self._up.poll(START_TIMEOUT_S) else f"no answer within {START_TIMEOUT_S} s"
		except EOFError:  # it died (its traceback is on stderr)
			self._process.join(timeout=10)
			ready = f"it exited with code {self._process.exitcode}"
		if ready != "ready":
			self._process.kill()
			raise RuntimeError(f"the engine process did not start: {ready}")
		self._requests: dict[int, Request] = {}  # by id(request), until its last output
		self._lock = threading.Lock()  # the requests (submit and cancel come from any thread)
		self._sending = threading.Lock()  # the pipe down
		self._closed = False
		self._reader = threading.Thread(target=self._read, name="dimgpt-engine-outputs", daemon=True)
		self._reader.start()

	def submit(self, request: Request) -> None:
		"""Queue `request`; raises QueueFull when `max_queue` requests wait already."""
		with self._lock:
			if self._closed:
				raise RuntimeError("the engine is closed")
			# Requests still running or waiting: the child counts a request as gone a little before this
			# side hears of it, so it never refuses what this check lets through.
			if len(self._requests) >= self.max_batch + self.max_queue:
				raise QueueFull
			self._requests[id(request)] = request
		self._send("submit", id(request), request.prompt, request.settings, request.stop_ids, request.stop)

	def cancel(self, request: Request) -> None:
		"""The client left: the child drops the request from its queue, or frees its row before the next step."""
		with self._lock:
			request.cancelled = True
			if id(request) not in self._requests or self._closed:
				return
		self._send("cancel", id(request))

	def stats(self) -> dict[str, int]:
		running, waiting, busiest = self._counts[:]
		return {"running": running, "waiting": waiting, "max_batch": self.max_batch, "busiest_step": busiest}

	def close(self) -> None:
		with self._lock:
			if self._closed:
				return
			self._closed = True
		self._send("close")
		self._process.join(timeout=10)
		if self._process.is_alive():
			self._process.kill()
		self._reader.join(timeout=10)

	def _send(self, *message: object) -> None:
		# Never under self._lock: a full pipe must not stop the reader, which drains the child's.
		with self._sending, contextlib.suppress(OSError):  # OSError: the child is gone (the reader fails its requests)
			self._down.send(message)

	def _read(self) -> None:
		"""Hand each output to its request, as the engine thread does in one process."""
		while True:
			try:
				batch = self._up.recv()
			except (EOFError, OSError):
				break
			for key, output in batch:
				with self._lock:
					request = self._requests.pop(key) if output.finish_reason else self._requests.get(key)
				if request is not None:
					request.finished = request.finished or output.finish_reason is not None
					request.emit(output)
		with self._lock:  # the child has ended: nothing more will come for the requests left
			left, self._requests = list(self._requests.values()), {}
			closing, self._closed = self._closed, True
		for request in left:
			request.finished = True
			if closing:
				request.emit(Output(finish_reason="cancelled", prompt_tokens=len(request.prompt)))
			else:
				error = f"the engine process ended (exit code {self._process.exitcode})"
				request.emit(Output(finish_reason="error", error=error, prompt_tokens=len(request.prompt)))


class _Outbox:
	"""The child's outputs, sent up once per prefill or step (one message, one wake-up of the reader)."""

	def __init__(self, connection: Connection, counts: Any) -> None:
		self.connection, self.counts = connection, counts
		self.engine: Engine | None = None
		self.lock = threading.Lock()
		self.pending: list[tuple[int, Output]] = []

	def post(self, key: int, output: Output) -> None:
		with self.lock:
			self.pending.append((key, output))

	def flush(self) -> None:
		with self.lock:
			if self.engine is not None:
				stats = self.engine.stats()
				self.counts[:] = [stats["running"], stats["waiting"], stats["busiest_step"]]
			if self.pending:
				self.connection.send(self.pending)
				self.pending = []


def _pack(sampler: Sampler) -> tuple:
	"""What the child rebuilds the sampler from: the model's config and parameters (pickled into shared
	memory, not copied; the module itself holds hooks that do not pickle) and the tokenizer."""
	model = sampler.model
	parameters = {name: p.detach() for name, p in model.named_parameters()}  # the tied matrix once
	return model.config, parameters, model.training, sampler._tokenizer()


def _unpack(config: ModelConfig, parameters: dict[str, torch.Tensor], training: bool, tokenizer: Tokenizer) -> Sampler:
	with torch.device("meta"):
		model = Transformer(config)
	for name, tensor in parameters.items():
		module, _, attribute = name.rpartition(".")
		setattr(model.get_submodule(module), attribute, torch.nn.Parameter(tensor, requires_grad=False))
	model.tie_weights()
	device = model.token_embedding.weight.device
	return Sampler(model.to(device).train(training), tokenizer)  # .to: buffers derived from the config, on that device


def _child(
	packed: tuple,
	max_batch: int,
	max_queue: int,
	threads: int,
	down: Connection,
	up: Connection,
	counts: Any,
) -> None:
	"""The child process: an Engine, fed by this thread from the pipe down."""
	signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the server, which then closes this process
	torch.set_num_threads(threads)
	outbox = _Outbox(up, counts)
	try:
		engine = Engine(_unpack(*packed), max_batch, max_queue, after_forward=outbox.flush)
	except Exception as error:
		up.send(f"{type(error).__name__}: {error}")
		return
	outbox.engine = engine
	up.send("ready")
	requests: dict[int, Request] = {}

	def post(key: int, output: Output) -> None:  # engine thread, or this one (cancel)
		if output.finish_reason:
			requests.pop(key, None)
		outbox.post(key, output)

	while True:
		try:
			message = down.recv()
		except (EOFError, OSError):  # the server is gone
			break
		if message[0] == "close":
			break
		if message[0] == "submit":
			_, key, prompt, settings, stop_ids, stop = message
			request = Request(prompt, settings, partial(post, key), stop_ids=stop_ids, stop=stop)
			requests[key] = request
			try:
				engine.submit(request)
			except QueueFull:  # not expected: the server checks first (see EngineProcess.submit)
				post(key, Output(finish_reason="error", error="the queue is full", prompt_tokens=len(prompt)))
		elif message[0] == "cancel" and message[1] in requests:
			engine.cancel(requests[message[1]])
		outbox.flush()  # counts (a request waits), and a cancelled request's last output
	engine.close()
	outbox.flush()
