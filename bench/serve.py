"""Serving: aggregate tokens/s and time to first token at 1, 4 and 16 concurrent streaming clients,
continuous batching (`--max-batch 16`) vs one request at a time (`--max-batch 1`).

    .venv/bin/python -m bench.serve                 # 3 repeats, 4 requests per client
    .venv/bin/python -m bench.serve --repeats 1     # quicker

The `tiny` preset's model (random weights, seed 0; a 4,096-token vocabulary trained on the embedded
corpus), float32 on the CPU, served by two `python -m dimgpt serve` processes started side by side
(one per side, `--threads` torch threads each); this process runs the clients (one thread and one
keep-alive connection each, see `Connection`).
Each client sends its requests one after another: a streamed chat completion of one short question,
greedy, `max_tokens` 64 (a random model may stop earlier; both sides decode the same tokens, so the
counts match). Aggregate tokens/s: completion tokens of all requests / wall time from the first
request sent to the last answer read. Time to first token: from sending a request to reading its first
text chunk (per request; the run's median). Each repeat measures every client count on both sides,
alternating which side goes first; the table gives the median and min-max over repeats.

Targets: at 16 clients, batched >= 4x the aggregate tokens/s of one at a time; batched time to first
token at 16 clients <= 2x that at 1 client.

Each repeat also times the engine alone, in this process and without HTTP (same model, prompts and
torch threads): 16 requests submitted at the same instant against 1, from submission to each first
token (`--waves` times each). It is the part of the first-token ratio that no server code can remove:
the prefill of 16 prompts against one. The last ratio row says what the 16-client / 1-client ratio
would be if each extra client cost nothing but its share of that prefill: (T1 - E1 + E16) / T1, T1
the server's 1-client first token, E1 and E16 the engine's, all from the same repeat.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import torch

from bench.common import print_table, spread_text, write_results
from dimgpt.data import chat_format
from dimgpt.data.corpus import embedded_documents
from dimgpt.data.tokenizer import Tokenizer
from dimgpt.model.loading import save_model
from dimgpt.model.transformer import Transformer
from dimgpt.presets import get_preset
from dimgpt.sampling import ChatSession, SamplingConfig, load_sampler
from dimgpt.serve.engine import Engine, Output, Request

CLIENTS = (1, 4, 16)
SIDES = {"batched": 16, "one at a time": 1}  # --max-batch of each side
QUESTIONS = ["How do I write a loop?", "What is a class?", "Explain the with statement.", "What does yield do?"]


def make_model(directory: Path) -> None:
	"""The tiny preset with random weights and a vocabulary trained on the embedded corpus, saved as a run."""
	tokenizer = Tokenizer.train(list(embedded_documents()), get_preset("tiny").data.vocab_size, progress=False)
	torch.manual_seed(0)
	config = get_preset("tiny").model
	if tokenizer.vocab_size > config.vocab_size:
		raise SystemExit(f"the vocabulary has {tokenizer.vocab_size} tokens, more than the model's {config.vocab_size}")
	save_model(Transformer(config), directory / "checkpoints" / "best")
	tokenizer.save(directory / "vocab.txt")


def start_server(model: Path, max_batch: int, threads: int) -> tuple[subprocess.Popen, str]:
	with socket.socket() as s:
		s.bind(("127.0.0.1", 0))
		port = s.getsockname()[1]
	root = Path(__file__).resolve().parents[1]
	env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(root)}
	env.pop("DIMGPT_API_KEY", None)
	command = [sys.executable, "-m", "dimgpt", "serve", "--model", str(model), "--device", "cpu"]
	command += ["--port", str(port), "--max-batch", str(max_batch), "--max-queue", "64"]
	process = subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
	url = f"http://127.0.0.1:{port}"
	deadline = time.monotonic() + 300
	while True:
		if process.poll() is not None:
			raise SystemExit(f"the server exited with status {process.returncode}: {' '.join(command)}")
		try:
			if httpx.get(url + "/health", timeout=2).status_code == 200:
				return process, url
		except httpx.TransportError:
			pass
		if time.monotonic() > deadline:
			process.kill()
			raise SystemExit("the server did not start within 5 minutes")
		time.sleep(0.2)


class Connection:
	"""One client's keep-alive HTTP/1.1 connection, written for this benchmark: a request is one socket
	write of ready bytes, a response is read with a few lines of chunked decoding.

	Why not httpx: its per-request and per-chunk work is a few hundred microseconds of Python, and the
	16 client threads of this one process take turns on its GIL, so at 16 clients each measured time
	held several milliseconds of waiting for the other clients of the benchmark itself. Clients of a real
	server do not wait for one another; this client keeps that waiting small (and leaves the CPU to the
	server, as clients on other machines would).
	"""

	def __init__(self, url: str) -> None:
		host, port = url.removeprefix("http://").split(":")
		self.host = f"{host}:{port}"
		self.socket = socket.create_connection((host, int(port)))
		self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
		self.buffer = b""

	def close(self) -> None:
		self.socket.close()

	def _read_until(self, separator: bytes) -> bytes:
		while separator not in self.buffer:
			data = self.socket.recv(65536)
			if not data:
				raise ConnectionError("the server closed the connection")
			self.buffer += data
		line, self.buffer = self.buffer.split(separator, 1)
		return line

	def _read(self, size: int) -> bytes:
		while len(self.buffer) < size:
			data = self.socket.recv(65536)
			if not data:
				raise ConnectionError("the server closed the connection")
			self.buffer += data
		data, self.buffer = self.buffer[:size], self.buffer[size:]
		return data

	def post_events(self, path: str, body: dict) -> Iterator[bytes]:
		"""POST `body` as JSON and yield the data of each server-sent event of the (chunked) answer."""
		payload = json.dumps(body).encode()
		head = f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
		self.socket.sendall(head.encode() + b"Content-Length: %d\r\n\r\n" % len(payload) + payload)
		status, *headers = self._read_until(b"\r\n\r\n").split(b"\r\n")
		if b" 200 " not in status or b"transfer-encoding: chunked" not in b"\n".join(headers).lower():
			raise RuntimeError(f"unexpected answer: {status!r}")
		events = b""
		while size := int(self._read_until(b"\r\n").split(b";")[0], 16):
			events += self._read(size + 2)[:-2]
			*complete, events = events.split(b"\n\n")
			for event in complete:
				if event.startswith(b"data: "):
					yield event[6:]
		self._read_until(b"\r\n")  # the end of the chunked body


def one_request(connection: Connection, question: str, max_tokens: int) -> tuple[float, int, str]:
	"""(seconds to the first text chunk, completion tokens, text) of one streamed chat completion."""
	start = time.perf_counter()
	body = {
		"messages": [{"role": "user", "content": question}],
		"temperature": 0,
		"max_tokens": max_tokens,
		"stream": True,
		"stream_options": {"include_usage": True},
	}
	first, tokens, text = None, 0, []
	for data in connection.post_events("/v1/chat/completions", body):
		if data == b"[DONE]":
			continue
		chunk = json.loads(data)
		if chunk.get("usage"):
			tokens = chunk["usage"]["completion_tokens"]
		if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
			if first is None:
				first = time.perf_counter() - start
			text.append(chunk["choices"][0]["delta"]["content"])
	return (first if first is not None else time.perf_counter() - start), tokens, "".join(text)


def run_clients(url: str, clients: int, requests: int, max_tokens: int) -> dict:
	"""`clients` threads each sending `requests` requests in turn; aggregate rate and per-request TTFT."""
	results: list[tuple[int, float, int, str]] = []
	errors: list[str] = []
	lock = threading.Lock()
	barrier = threading.Barrier(clients + 1)

	def client(c: int) -> None:
		connection = Connection(url)
		barrier.wait()
		for i in range(requests):
			question = QUESTIONS[(c + i) % len(QUESTIONS)]
			try:
				ttft, tokens, text = one_request(connection, question, max_tokens)
			except Exception as error:
				with lock:
					errors.append(f"{type(error).__name__}: {error}")
				connection.close()
				connection = Connection(url)  # the connection's state is unknown: a fresh one
				continue
			with lock:
				results.append(((c + i) % len(QUESTIONS), ttft, tokens, text))
		connection.close()

	threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
	for thread in threads:
		thread.start()
	barrier.wait()
	start = time.perf_counter()
	for thread in threads:
		thread.join()
	wall = time.perf_counter() - start
	tokens = sum(r[2] for r in results)
	return {
		"tokens_per_s": tokens / wall,
		"ttft_s": statistics.median(r[1] for r in results) if results else float("nan"),
		"tokens": tokens,
		"wall_s": wall,
		"errors": errors,
		"answers": {q: t for q, _, _, t in results},
	}


def engine_first_token(engine: Engine, prompts: list[list[int]], requests: int, waves: int) -> float:
	"""Median seconds from submitting `requests` requests together (greedy, one new token each) to each
	one's first output, over `waves` rounds."""
	times: list[float] = []
	done = threading.Semaphore(0)

	def record(start: float, output: Output) -> None:  # engine thread; one new token: the only output
		times.append(time.perf_counter() - start)
		done.release()

	for _ in range(waves):
		emit = functools.partial(record, time.perf_counter())
		for i in range(requests):
			settings = SamplingConfig(temperature=0, max_new_tokens=1)
			engine.submit(Request(prompts[i % len(prompts)], settings, emit, stop_ids=chat_format.ANSWER_ENDS))
		for _ in range(requests):
			done.acquire()
	return statistics.median(times)


def main() -> None:
	parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
	parser.add_argument("--repeats", type=int, default=3)
	parser.add_argument("--requests", type=int, default=4, help="requests per client (default: 4)")
	parser.add_argument("--max-tokens", type=int, default=64)
	parser.add_argument("--threads", type=int, default=1, help="torch threads of each server (default: 1)")
	parser.add_argument("--waves", type=int, default=8, help="rounds of the engine-alone timing (default: 8)")
	args = parser.parse_args()

	with tempfile.TemporaryDirectory() as tmp:
		model = Path(tmp) / "tiny"
		make_model(model)
		servers = {side: start_server(model, batch, args.threads) for side, batch in SIDES.items()}
		torch.set_num_threads(args.threads)
		sampler = load_sampler(model, None, "cpu")
		engine = Engine(sampler, max_batch=max(SIDES.values()))
		prompts = [ChatSession(sampler).prompt_ids(q) for q in QUESTIONS]  # as the server builds them
		try:
			for _, url in servers.values():  # warm-up: first forward, encoder
				run_clients(url, 1, 1, 8)
			engine_first_token(engine, prompts, max(CLIENTS), 2)
			runs: dict[tuple[str, int], list[dict]] = {}
			alone: dict[int, list[float]] = {1: [], max(CLIENTS): []}  # engine alone: requests -> seconds
			for repeat in range(args.repeats):
				order = list(SIDES) if repeat % 2 == 0 else list(SIDES)[::-1]
				for clients in CLIENTS:
					for side in order:
						result = run_clients(servers[side][1], clients, args.requests, args.max_tokens)
						runs.setdefault((side, clients), []).append(result)
						print(
							f"repeat {repeat + 1}/{args.repeats}  {clients:2d} clients  {side:13s}  "
							f"{result['tokens_per_s']:7.1f} tokens/s  first token {result['ttft_s'] * 1000:7.1f} ms"
							+ (f"  {len(result['errors'])} errors" if result["errors"] else ""),
							flush=True,
						)
				for requests in alone if repeat % 2 == 0 else list(alone)[::-1]:
					alone[requests].append(engine_first_token(engine, prompts, requests, args.waves))
					print(
						f"repeat {repeat + 1}/{args.repeats}  {requests:2d} requests engine alone  "
						f"first token {alone[requests][-1] * 1000:7.1f} ms",
						flush=True,
					)
		finally:
			engine.close()
			for process, _ in servers.values():
				process.terminate()
				process.wait(timeout=30)

	errors = sum(len(r["errors"]) for rs in runs.values() for r in rs)
	same = all(r["answers"] == runs[("one at a time", c)][0]["answers"] for (side, c), rs in runs.items() for r in rs)
	rows = []
	for clients in CLIENTS:
		for side in SIDES:
			rs = runs[(side, clients)]
			rows.append(
				[
					clients,
					side,
					spread_text([r["tokens_per_s"] for r in rs]),
					spread_text([r["ttft_s"] * 1000 for r in rs]),
					sum(r["tokens"] for r in rs) // len(rs),
				]
			)
	header = ["clients", "decoding", "tokens/s (aggregate)", "first token, ms", "tokens a run"]
	print_table(
		f"Serving, tiny preset, CPU, {args.threads} torch thread(s) a server: median (min-max) of {args.repeats}",
		header,
		rows,
	)
	print_table(
		f"The engine alone (this process, no HTTP): requests submitted together, median (min-max) of {args.repeats}",
		["requests", "first token, ms"],
		[[n, spread_text([t * 1000 for t in times])] for n, times in alone.items()],
	)

	def ratio(a: list[dict], b: list[dict], key: str) -> list[float]:
		return [x[key] / y[key] for x, y in zip(a, b)]

	speedup = {c: ratio(runs[("batched", c)], runs[("one at a time", c)], "tokens_per_s") for c in CLIENTS}
	ttft_ratio = ratio(runs[("batched", 16)], runs[("batched", 1)], "ttft_s")
	engine_ratio = [e16 / e1 for e1, e16 in zip(alone[1], alone[16])]
	# The server's 1-client first token with the engine's 1-request time replaced by its 16-request time.
	t1 = [r["ttft_s"] for r in runs[("batched", 1)]]
	prefill_only = [(t - e1 + e16) / t for t, e1, e16 in zip(t1, alone[1], alone[16])]
	ratio_rows = [[f"tokens/s, batched / one at a time, {c} clients", spread_text(speedup[c])] for c in CLIENTS]
	ratio_rows += [
		["first token, batched: 16 clients / 1 client", spread_text(ttft_ratio)],
		["first token, engine alone: 16 requests / 1", spread_text(engine_ratio)],
		["  16 clients / 1 if a client cost only its prefill", spread_text(prefill_only)],
	]
	print_table("Ratios (same repeat, median (min-max))", ["ratio", "value"], ratio_rows)
	targets = {
		"tokens/s at 16 clients >= 4x one at a time": statistics.median(speedup[16]) >= 4,
		"first token at 16 clients <= 2x at 1 client": statistics.median(ttft_ratio) <= 2,
	}
	for target, met in targets.items():
		print(f"target {'met' if met else 'MISSED'}: {target}")
	print(f"errors: {errors}; greedy answers identical on both sides and at every client count: {same}")
	write_results(
		"serve",
		{
			"settings": vars(args),
			"runs": {
				f"{side}/{clients}": [{k: v for k, v in r.items() if k != "answers"} for r in rs]
				for (side, clients), rs in runs.items()
			},
			"speedup": {str(c): v for c, v in speedup.items()},
			"ttft_16_over_1": ttft_ratio,
			"engine_alone_first_token_s": {str(n): times for n, times in alone.items()},
			"engine_alone_16_over_1": engine_ratio,
			"ttft_16_over_1_if_only_prefill": prefill_only,
			"targets": targets,
			"errors": errors,
			"same_answers": same,
		},
	)


if __name__ == "__main__":
	main()
