"""The OpenAI-compatible HTTP API and the chat page, on FastAPI + uvicorn.

    POST /v1/chat/completions   system / user / assistant messages -> the chat format (dimgpt/data/chat_format.py)
    POST /v1/completions        raw text continuation
    GET  /v1/models, /v1/models/{id}, /health
    GET  /                      the chat page (chat.html, one static file)

Requests are checked here and run by the continuous-batching `Engine`. Sampling settings a request
leaves out take `SamplingConfig`'s defaults (the DimensionGPT testing notebook's), not OpenAI's;
`top_k` and `repetition_penalty` (DimensionGPT's penalty) are accepted as extensions.

Safety: every error is a JSON body `{"error": {"message", "type", "param", "code"}}` as OpenAI's;
bad input is a 4xx, never a 500. With an API key, every endpoint but the page itself wants
`Authorization: Bearer KEY` (a browser cannot send a header when it opens a page, and the page holds
no data: it asks for the key and sends it with each request). Message text is encoded as text, so a
control-token string inside it (⮜user⮞ ...) is never a control token and cannot start a turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import math
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from dimgpt.data import chat_format
from dimgpt.data.tokenizer import END_OF_TEXT, START_OF_TEXT
from dimgpt.sampling import ChatSession, Sampler, SamplingConfig
from dimgpt.serve.engine import Engine, Output, QueueFull
from dimgpt.serve.engine import Request as Job
from dimgpt.serve.worker import EngineProcess, unshareable

MAX_STOP_STRINGS = 4  # as OpenAI
MAX_STOP_CHARS = 200
INLINE_ENCODE_BYTES = 16_384  # request bodies below this are encoded on the event loop (microseconds)
SWITCH_INTERVAL_S = 0.001  # see `serve`
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


@dataclass(frozen=True)
class Limits:
	"""What one request may ask for."""

	max_tokens: int = 512  # new tokens per request (also the default)
	max_body_bytes: int = 1 << 20  # request body
	retry_after_s: int = 1  # Retry-After of a 503 when the queue is full


class ApiError(Exception):
	"""An error answered as OpenAI does: status, message, type, param, code."""

	def __init__(
		self,
		status: int,
		message: str,
		*,
		type: str = "invalid_request_error",
		param: str | None = None,
		code: str | None = None,
		headers: dict[str, str] | None = None,
	) -> None:
		super().__init__(message)
		self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
		self.headers = headers

	def body(self) -> dict[str, Any]:
		return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

	def response(self) -> JSONResponse:
		return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def model_name(path: str | Path) -> str:
	"""The id the API gives a model: a .pt/.safetensors file's stem, else the run or checkpoint directory's name."""
	path = Path(path).resolve()
	if path.is_file() and path.stem != "model":
		return path.stem
	if path.is_file():
		path = path.parent
	if path.parent.name == "checkpoints":  # runs/NAME/checkpoints/best -> NAME
		path = path.parent.parent
	return path.name


def create_app(
	engine: Engine | EngineProcess, name: str, *, api_key: str | None = None, limits: Limits | None = None
) -> ASGIApp:
	"""The ASGI application serving `engine`'s model (the engine in this process or in its own) under the
	id `name`: FastAPI, and a shorter way in for the generation requests."""
	limits = limits or Limits()
	sampler: Sampler = engine.sampler
	tokenizer = engine.tokenizer
	context = engine.context
	encode_lock = threading.Lock()  # the tokenizer's caches are not meant for concurrent writers
	created = int(time.time())
	app = FastAPI(title="dimgpt", docs_url=None, redoc_url=None, openapi_url=None)
	page = resources.files("dimgpt.serve").joinpath("chat.html").read_text(encoding="utf-8")
	tokenizer.encode("")  # build (or load) the encoder now, not under the first request

	@app.exception_handler(ApiError)
	async def _api_error(request: Request, error: ApiError) -> JSONResponse:
		return error.response()

	@app.exception_handler(StarletteHTTPException)
	async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
		message = {404: f"no route {request.url.path}", 405: f"{request.method} is not allowed on {request.url.path}"}
		code = {404: "not_found", 405: "method_not_allowed"}
		return ApiError(
			error.status_code, message.get(error.status_code, str(error.detail)), code=code.get(error.status_code)
		).response()

	@app.exception_handler(Exception)
	async def _server_error(request: Request, error: Exception) -> JSONResponse:
		return ApiError(500, f"internal error: {type(error).__name__}: {error}", type="server_error").response()

	def check_key(request: Request) -> None:
		if api_key is None:
			return
		header = request.headers.get("authorization", "")
		scheme, _, given = header.partition(" ")
		if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), api_key.encode()):
			raise ApiError(
				401,
				"missing or wrong API key: send the header 'Authorization: Bearer KEY'",
				code="invalid_api_key",
				headers={"WWW-Authenticate": "Bearer"},
			)

	async def read_body(request: Request) -> dict[str, Any]:
		length = request.headers.get("content-length", "")
		if length.isdigit() and int(length) > limits.max_body_bytes:
			raise _too_large(limits.max_body_bytes)
		body = bytearray()
		async for chunk in request.stream():
			body += chunk
			if len(body) > limits.max_body_bytes:
				raise _too_large(limits.max_body_bytes)
		try:
			data = json.loads(body)
		except (ValueError, UnicodeDecodeError) as error:
			raise ApiError(400, f"the request body is not valid JSON: {error}") from None
		if not isinstance(data, dict):
			raise ApiError(400, "the request body must be a JSON object")
		requested = data.get("model")
		if requested is not None and requested != name:
			if not isinstance(requested, str):
				raise ApiError(400, "model must be a string", param="model")
			raise ApiError(
				404,
				f"model {requested!r} does not exist; this server serves {name!r}",
				param="model",
				code="model_not_found",
			)
		return data

	def settings_of(body: dict[str, Any]) -> tuple[SamplingConfig, tuple[str, ...], bool, bool]:
		"""(sampling settings, stop strings, stream, include usage in the stream) of a request body."""
		default = SamplingConfig()
		max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
		param = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
		max_tokens = _integer(max_tokens, param, limits.max_tokens, 1, limits.max_tokens)
		settings = SamplingConfig(
			temperature=_number(body.get("temperature"), "temperature", default.temperature, 0.0, 2.0),
			top_p=_number(body.get("top_p"), "top_p", default.top_p, 0.0, 1.0, low_open=True),
			top_k=_integer(body.get("top_k"), "top_k", default.top_k, 0, None),
			repetition_penalty=_number(
				body.get("repetition_penalty"), "repetition_penalty", default.repetition_penalty, 0.0, 100.0
			),
			max_new_tokens=max_tokens,
			seed=_integer(body.get("seed"), "seed", None, -(2**63), 2**63 - 1),
		)
		for unsupported in ("presence_penalty", "frequency_penalty"):
			if _number(body.get(unsupported), unsupported, 0.0, -2.0, 2.0) != 0:
				raise ApiError(400, f"{unsupported} is not supported: use repetition_penalty", param=unsupported)
		if _integer(body.get("n"), "n", 1, 1, None) != 1:
			raise ApiError(400, "n must be 1: one choice per request", param="n")
		if body.get("logprobs") not in (None, False) or body.get("echo") not in (None, False):
			param = "logprobs" if body.get("logprobs") not in (None, False) else "echo"
			raise ApiError(400, f"{param} is not supported", param=param)
		stream = _boolean(body.get("stream"), "stream", False)
		options = body.get("stream_options")
		if options is not None and not isinstance(options, dict):
			raise ApiError(400, "stream_options must be an object", param="stream_options")
		usage = _boolean((options or {}).get("include_usage"), "stream_options.include_usage", False)
		return settings, _stop_strings(body.get("stop")), stream, usage

	def chat_prompt(messages: Any, settings: SamplingConfig) -> list[int]:
		system, turns, question = parse_messages(messages)
		with encode_lock:
			session = ChatSession(sampler, system=system, settings=settings)
			session.turns = [(tokenizer.encode(q), tokenizer.encode(a)) for q, a in turns]
			return session.prompt_ids(question)

	def completion_prompt(prompt: Any) -> list[int]:
		if isinstance(prompt, list) and len(prompt) == 1:
			prompt = prompt[0]
		if not isinstance(prompt, str):
			raise ApiError(400, "prompt must be a string (or a list of one string)", param="prompt")
		with encode_lock:
			ids = [START_OF_TEXT, *tokenizer.encode(prompt)]
		if len(ids) > context:
			raise ApiError(
				400,
				f"the prompt is {len(ids)} tokens; this model reads at most {context} (its context)",
				param="prompt",
			)
		return ids

	mailboxes: dict[asyncio.AbstractEventLoop, _Mailbox] = {}

	def submit(
		prompt: list[int], settings: SamplingConfig, stop: tuple[str, ...], stop_ids: tuple[int, ...]
	) -> tuple[Job, asyncio.Queue[Output]]:
		loop = asyncio.get_running_loop()
		mailbox = mailboxes.setdefault(loop, _Mailbox(loop))
		outputs: asyncio.Queue[Output] = asyncio.Queue()
		job = Job(prompt, settings, lambda output: mailbox.post(outputs, output), stop_ids=stop_ids, stop=stop)
		try:
			engine.submit(job)
		except QueueFull:
			raise ApiError(
				503,
				f"the server is busy ({engine.max_batch} requests running, {engine.max_queue} waiting): retry shortly",
				type="server_error",
				code="server_busy",
				headers={"Retry-After": str(limits.retry_after_s)},
			) from None
		return job, outputs

	async def run(request: Request, body: dict[str, Any], chat: bool) -> Response:
		size = int(request.headers.get("content-length") or limits.max_body_bytes)
		settings, stop, stream, include_usage = settings_of(body)
		make = (
			partial(chat_prompt, body.get("messages"), settings)
			if chat
			else partial(completion_prompt, body.get("prompt"))
		)
		# A short text is encoded at once; a long one in a worker thread, not to stall the other streams.
		prompt = make() if size < INLINE_ENCODE_BYTES else await run_in_threadpool(make)
		stop_ids = chat_format.ANSWER_ENDS if chat else (END_OF_TEXT,)
		job, outputs = submit(prompt, settings, stop, stop_ids)
		ident = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
		head = {"id": ident, "created": int(time.time()), "model": name}
		if stream:
			events = _stream_events(outputs, head, chat, include_usage)
			return _EventStream(events, lambda: engine.cancel(job) if not job.finished else None)
		watcher = asyncio.ensure_future(_wait_disconnect(request.receive))
		try:
			text, last = [], None
			while last is None:
				getter = asyncio.ensure_future(outputs.get())
				await asyncio.wait({getter, watcher}, return_when=asyncio.FIRST_COMPLETED)
				if not getter.done():
					getter.cancel()
					engine.cancel(job)
					return Response(status_code=499)  # nobody is listening
				output = getter.result()
				text.append(output.text)
				if output.finish_reason:
					last = output
		finally:
			watcher.cancel()
			if not job.finished:
				engine.cancel(job)
		if last.finish_reason == "error":
			raise ApiError(500, f"generation failed: {last.error}", type="server_error")
		content = "".join(text)
		choice = {"index": 0, "finish_reason": last.finish_reason, "logprobs": None}
		if chat:
			choice["message"] = {"role": "assistant", "content": content}
		else:
			choice["text"] = content
		return JSONResponse(
			{
				**head,
				"object": "chat.completion" if chat else "text_completion",
				"choices": [choice],
				"usage": _usage(last),
			}
		)

	@app.get("/", include_in_schema=False)
	async def chat_page() -> HTMLResponse:
		return HTMLResponse(page)

	@app.get("/health")
	async def health(request: Request) -> dict[str, Any]:
		check_key(request)
		return {"status": "ok", "model": name, **engine.stats()}

	def model_card() -> dict[str, Any]:
		return {"id": name, "object": "model", "created": created, "owned_by": "dimgpt", "max_model_len": context}

	@app.get("/v1/models")
	async def models(request: Request) -> dict[str, Any]:
		check_key(request)
		return {"object": "list", "data": [model_card()]}

	@app.get("/v1/models/{model_id:path}")
	async def model(request: Request, model_id: str) -> dict[str, Any]:
		check_key(request)
		if model_id != name:
			raise ApiError(
				404, f"model {model_id!r} does not exist; this server serves {name!r}", code="model_not_found"
			)
		return model_card()

	generation = {"/v1/chat/completions": True, "/v1/completions": False}  # path -> chat

	@app.post("/v1/chat/completions")  # routed here too, so that other methods get FastAPI's 405
	@app.post("/v1/completions")
	async def generate(request: Request) -> Response:
		check_key(request)
		return await run(request, await read_body(request), chat=generation[request.scope["path"]])

	async def serve_request(scope: Scope, receive: Receive, send: Send) -> None:
		# The generation requests skip FastAPI's middleware and routing: a few hundred microseconds of the
		# event loop per request, and a burst of requests (clients whose answers ended together) waits for
		# all of them in turn. Same handler, same errors; everything else goes through FastAPI.
		if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in generation:
			return await app(scope, receive, send)
		try:
			response = await generate(Request(scope, receive))
		except ApiError as error:
			response = error.response()
		except Exception as error:
			response = await _server_error(None, error)
		await response(scope, receive, send)

	return serve_request


# --- request fields


def parse_messages(messages: Any) -> tuple[str | None, list[tuple[str, str]], str]:
	"""(system text, earlier (question, answer) turns, last question) of OpenAI chat messages.

	System (and developer) messages join into the preprompt; consecutive messages of one role join
	with a newline; an answer before any question gets an empty question; the last message must be
	the user's.
	"""
	if not isinstance(messages, list) or not messages:
		raise ApiError(400, "messages must be a non-empty array of {role, content} objects", param="messages")
	system, dialogue = [], []
	for i, message in enumerate(messages):
		param = f"messages[{i}]"
		if not isinstance(message, dict):
			raise ApiError(400, f"{param} must be an object with role and content", param=param)
		role = message.get("role")
		if not isinstance(role, str) or role not in ROLES:
			raise ApiError(
				400, f"{param}.role: unknown role {role!r}; use system, user or assistant", param=f"{param}.role"
			)
		text = _content(message.get("content"), f"{param}.content")
		role = ROLES[role]
		if role == "system":
			system.append(text)
		elif dialogue and dialogue[-1][0] == role:
			dialogue[-1] = (role, dialogue[-1][1] + "\n" + text)
		else:
			dialogue.append((role, text))
	if not dialogue or dialogue[-1][0] != "user":
		raise ApiError(400, "the last message (after any system message) must be the user's", param="messages")
	turns, question = [], ""
	for role, text in dialogue[:-1]:
		if role == "user":
			question = text
		else:
			turns.append((question, text))
			question = ""
	return "\n".join(system) or None, turns, dialogue[-1][1]


def _content(content: Any, param: str) -> str:
	if isinstance(content, str):
		return content
	if isinstance(content, list):
		parts = []
		for part in content:
			if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
				raise ApiError(
					400, f"{param}: only text parts ({{'type': 'text', 'text': ...}}) are supported", param=param
				)
			parts.append(part["text"])
		return "\n".join(parts)
	raise ApiError(400, f"{param} must be a string or a list of text parts", param=param)


def _number(value: Any, name: str, default: float, low: float, high: float, *, low_open: bool = False) -> float:
	if value is None:
		return default
	if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
		raise ApiError(400, f"{name} must be a number, not {json.dumps(value)[:40]}", param=name)
	if value < low or value > high or (low_open and value == low):
		raise ApiError(
			400, f"{name} must be {'above' if low_open else 'at least'} {low} and at most {high}", param=name
		)
	return float(value)


def _integer(value: Any, name: str, default: int | None, low: int, high: int | None) -> int | None:
	if value is None:
		return default
	if isinstance(value, bool) or not isinstance(value, int):
		raise ApiError(400, f"{name} must be an integer, not {json.dumps(value)[:40]}", param=name)
	if value < low or (high is not None and value > high):
		bound = f"from {low} to {high}" if high is not None else f"at least {low}"
		raise ApiError(400, f"{name} must be {bound} on this server, not {value}", param=name)
	return value


def _boolean(value: Any, name: str, default: bool) -> bool:
	if value is None:
		return default
	if not isinstance(value, bool):
		raise ApiError(400, f"{name} must be true or false", param=name)
	return value


def _stop_strings(stop: Any) -> tuple[str, ...]:
	if stop is None:
		return ()
	stops = [stop] if isinstance(stop, str) else stop
	if (
		not isinstance(stops, list)
		or len(stops) > MAX_STOP_STRINGS
		or not all(isinstance(s, str) and 0 < len(s) <= MAX_STOP_CHARS for s in stops)
	):
		raise ApiError(
			400,
			f"stop must be a string or a list of at most {MAX_STOP_STRINGS} non-empty strings of at most "
			f"{MAX_STOP_CHARS} characters",
			param="stop",
		)
	return tuple(stops)


def _too_large(limit: int) -> ApiError:
	return ApiError(413, f"the request body is larger than {limit:,} bytes", code="request_too_large")


def _usage(output: Output) -> dict[str, int]:
	return {
		"prompt_tokens": output.prompt_tokens,
		"completion_tokens": output.completion_tokens,
		"total_tokens": output.prompt_tokens + output.completion_tokens,
	}


# --- streaming


class _Mailbox:
	"""Hands the engine thread's outputs to the event loop: one wake-up for all the outputs of a step,
	not one per token (each wake-up costs the loop a system call and the GIL)."""

	def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
		self.loop = loop
		self.lock = threading.Lock()
		self.pending: list[tuple[asyncio.Queue[Output], Output]] = []

	def post(self, queue: asyncio.Queue[Output], output: Output) -> None:  # engine thread
		with self.lock:
			self.pending.append((queue, output))
			if len(self.pending) > 1:
				return  # a delivery is scheduled already
		with contextlib.suppress(RuntimeError):  # the loop is gone (server shutting down)
			self.loop.call_soon_threadsafe(self._deliver)

	def _deliver(self) -> None:  # event loop
		with self.lock:
			pending, self.pending = self.pending, []
		for queue, output in pending:
			queue.put_nowait(output)


async def _stream_events(
	outputs: asyncio.Queue[Output], head: dict[str, Any], chat: bool, include_usage: bool
) -> AsyncIterator[tuple[bytes, bool]]:
	"""Server-sent events in OpenAI's chunk format, ending with `data: [DONE]`: (bytes, more to come).

	Each item is one write to the socket: a chat's opening role chunk goes out with the first text, and
	the end (last text, finish reason, usage, [DONE]) in one piece. A write costs a system call here and
	a wake-up and a read in the client; when the answers of a batch end together, their clients send
	their next requests at once, and these writes stood in the way of the next first tokens.
	"""
	kind = "chat.completion.chunk" if chat else "text_completion"

	def chunk(text: str | None, finish: str | None, first: bool = False) -> bytes:
		if chat:
			delta: dict[str, Any] = {} if text is None else {"content": text}
			if first:
				delta["role"] = "assistant"
			choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
		else:
			choice = {"index": 0, "text": text or "", "finish_reason": finish, "logprobs": None}
		return _event({**head, "object": kind, "choices": [choice]})

	opening = chunk("", None, first=True) if chat else b""
	while True:
		output = await outputs.get()
		while not output.finish_reason and not outputs.empty():  # the client is behind: one chunk for all
			following = outputs.get_nowait()
			following.text = output.text + following.text
			output = following
		if output.finish_reason == "cancelled":
			return
		if output.finish_reason == "error":
			yield (
				opening + _event(ApiError(500, f"generation failed: {output.error}", type="server_error").body()),
				False,
			)
			return
		events = [opening, chunk(output.text, None) if output.text else b""]
		opening = b""
		if output.finish_reason:
			events.append(chunk(None, output.finish_reason))
			if include_usage:
				events.append(_event({**head, "object": kind, "choices": [], "usage": _usage(output)}))
			events.append(b"data: [DONE]\n\n")
			yield b"".join(events), False
			return
		yield b"".join(events), True


def _event(data: dict[str, Any]) -> bytes:
	return b"data: " + json.dumps(data, ensure_ascii=False).encode() + b"\n\n"


async def _wait_disconnect(receive: Receive) -> None:
	while (await receive())["type"] != "http.disconnect":
		pass


class _EventStream(Response):
	"""A text/event-stream response that tells the engine at once when the client goes away.

	It watches the connection itself (rather than relying on the ASGI server's version of
	disconnect handling), so a client that leaves frees its row before the next step.
	"""

	media_type = "text/event-stream"

	def __init__(self, events: AsyncIterator[tuple[bytes, bool]], on_close: Any) -> None:
		# As StreamingResponse: no body, so no Content-Length header.
		self.status_code, self.background = 200, None
		self.init_headers({"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
		self.events, self.on_close = events, on_close

	async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
		watcher = asyncio.ensure_future(_wait_disconnect(receive))
		watcher.add_done_callback(lambda task: None if task.cancelled() else self.on_close())
		try:
			await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
			more = True
			async for event, more in self.events:
				if watcher.done():
					break
				await send({"type": "http.response.body", "body": event, "more_body": more})
			if more:  # cancelled, or the client left
				await send({"type": "http.response.body", "body": b"", "more_body": False})
		except OSError:  # the client went away mid-send
			pass
		finally:
			watcher.cancel()
			self.on_close()
			await self.events.aclose()


# --- running


class BackgroundServer:
	"""uvicorn serving `app` in a thread of this process (tests, benchmarks, notebooks); `url` once started."""

	def __init__(self, app: ASGIApp, host: str = "127.0.0.1", port: int = 0) -> None:
		import uvicorn

		self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off"))
		self.thread = threading.Thread(target=self.server.run, name="dimgpt-http", daemon=True)
		self.thread.start()
		deadline = time.monotonic() + 30
		while not self.server.started:
			if not self.thread.is_alive() or time.monotonic() > deadline:
				raise RuntimeError(f"the HTTP server did not start on {host}:{port}")
			time.sleep(0.01)
		bound = self.server.servers[0].sockets[0].getsockname()
		self.url = f"http://{host}:{bound[1]}"

	def stop(self) -> None:
		self.server.should_exit = True
		self.thread.join(timeout=10)

	def __enter__(self) -> BackgroundServer:
		return self

	def __exit__(self, *exc: object) -> None:
		self.stop()


def start_engine(sampler: Sampler, max_batch: int = 16, max_queue: int = 64) -> Engine | EngineProcess:
	"""The serve command's engine: in a process of its own (see EngineProcess), or in a thread of this one,
	with a note saying why, where the weights cannot be shared with a child (`unshareable`)."""
	if reason := unshareable(sampler):
		print(f"note: the engine runs in the server's process ({reason}; docker: --shm-size)", flush=True)
		return Engine(sampler, max_batch=max_batch, max_queue=max_queue)
	return EngineProcess(sampler, max_batch=max_batch, max_queue=max_queue)


def serve(
	model: str | Path,
	*,
	vocab: str | Path | None = None,
	device: str = "auto",
	host: str = "127.0.0.1",
	port: int = 8000,
	max_batch: int = 16,
	max_queue: int = 64,
	limits: Limits | None = None,
	api_key: str | None = None,
) -> None:
	"""Load the model and serve it until Ctrl-C (the `serve` command)."""
	import uvicorn

	from dimgpt.sampling import load_sampler

	sampler = load_sampler(model, vocab, device)
	# Whichever engine runs, a thread of this process hands its outputs to the event loop: at the default
	# 5 ms switch interval the loop would wait that long for the GIL each time that thread holds it.
	sys.setswitchinterval(SWITCH_INTERVAL_S)
	engine = start_engine(sampler, max_batch=max_batch, max_queue=max_queue)
	name = model_name(model)
	app = create_app(engine, name, api_key=api_key, limits=limits)
	where = f"http://{host}:{port}"
	print(f"serving {name} on {where} (chat page: {where}/, API: {where}/v1)", flush=True)
	if api_key is None and host not in ("127.0.0.1", "localhost", "::1"):
		print(f"warning: {host} is reachable from other machines and no API key is set (--api-key)", flush=True)
	try:
		uvicorn.run(app, host=host, port=port, log_level="info", lifespan="off")
	finally:
		engine.close()
