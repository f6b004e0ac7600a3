"""Evaluate a language model on text: bits per byte, bits per character, loss, perplexity, accuracy.

    python -m dimgpt evaluate --model runs/tiny/pretrain --text notes.txt articles.jsonl
    python -m dimgpt evaluate --model runs/tiny/pretrain --data runs/tiny/data   # its validation split

What is scored. A document is encoded as the training data stores it, `⮜start-of-text⮞ tokens`, with
our tokenizer (cleaning included), and every token after ⮜start-of-text⮞ is scored exactly once: its
negative log-likelihood (NLL) given the tokens before it. ⮜end-of-text⮞ is not scored, being no text:
a document's figure is -log P(text | ⮜start-of-text⮞), what lm-evaluation-harness calls its rolling
log-likelihood.

Documents longer than the context. The model reads at most `context_length` tokens (C). A longer
document is read in windows of C tokens, one starting every `stride` tokens (S, default C / 2): the
first window scores all its tokens, each later one only its last S tokens (those the window before did
not reach). A token is thus conditioned on every token before it when it lies in the first C tokens of
its document, on the C - S + 1 to C tokens before it otherwise. The default stride equals context -
attention window for both presets (512 - 256, 128 - 64), so every scored token sees its whole
attention window in the first layer; only the deeper layers' reach is cut at the window's start. A
smaller stride gives longer contexts for more compute (stride 1: a full context for every token).

Units. Bits per byte: the summed NLL in bits over the UTF-8 bytes of the raw text (as read, before
cleaning), so models with different tokenizers are compared on the same bytes. Bits per character:
the same over Unicode characters. Loss (nats per token), perplexity (exp(loss)) and next-token
accuracy (the most likely token is the right one) are per token: they depend on the tokenizer.

Windows are sorted by length and batched, right-padded: attention is causal, so padding after a
window's last token changes none of its logits.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from dimgpt import runs
from dimgpt.data.tokenizer import PADDING, START_OF_TEXT, Tokenizer
from dimgpt.errors import NotFoundError, UsageError
from dimgpt.model.transformer import Transformer

LOGITS_BUDGET = 256 * 2**20  # bytes of float32 logits one batch may hold, when no batch size is given
MAX_BATCH = 64


@dataclass
class Score:
	"""Sums over scored text; the figures are properties."""

	documents: int = 0
	characters: int = 0
	bytes: int = 0
	tokens: int = 0  # scored tokens
	nll: float = 0.0  # summed negative log-likelihood, in nats
	correct: int = 0  # scored tokens that were the model's most likely next token

	def add(self, other: Score) -> None:
		for name in ("documents", "characters", "bytes", "tokens", "nll", "correct"):
			setattr(self, name, getattr(self, name) + getattr(other, name))

	@property
	def bits_per_byte(self) -> float:
		return self.nll / math.log(2) / self.bytes if self.bytes else math.nan

	@property
	def bits_per_character(self) -> float:
		return self.nll / math.log(2) / self.characters if self.characters else math.nan

	@property
	def loss(self) -> float:
		return self.nll / self.tokens if self.tokens else math.nan

	@property
	def perplexity(self) -> float:
		return math.exp(self.loss) if self.tokens else math.nan

	@property
	def accuracy(self) -> float:
		return self.correct / self.tokens if self.tokens else math.nan

	def as_dict(self) -> dict[str, Any]:
		figures = ("bits_per_byte", "bits_per_character", "loss", "perplexity", "accuracy")
		return {**asdict(self), **{name: getattr(self, name) for name in figures}}


@dataclass
class Evaluation:
	"""What `evaluate` measured: a Score per text source and their total."""

	model: str
	context_length: int
	stride: int
	sources: dict[str, Score] = field(default_factory=dict)
	total: Score = field(default_factory=Score)
	seconds: float = 0.0

	@property
	def tokens_per_second(self) -> float:
		return self.total.tokens / self.seconds if self.seconds else math.nan

	def as_dict(self) -> dict[str, Any]:
		return {
			"model": self.model,
			"context_length": self.context_length,
			"stride": self.stride,
			"seconds": self.seconds,
			"tokens_per_second": self.tokens_per_second,
			"sources": {name: score.as_dict() for name, score in self.sources.items()},
			"total": self.total.as_dict(),
		}

	def table(self) -> str:
		"""The scores as an aligned text table, one row per source and a total."""
		header = ["text", "documents", "bytes", "tokens", "bits/byte", "bits/char", "loss", "perplexity", "accuracy"]
		rows = [[name, score] for name, score in self.sources.items()]
		if len(rows) > 1:
			rows.append(["total", self.total])
		cells = [
			[
				name,
				f"{s.documents:,}",
				f"{s.bytes:,}",
				f"{s.tokens:,}",
				f"{s.bits_per_byte:.4f}",
				f"{s.bits_per_character:.4f}",
				f"{s.loss:.4f}",
				f"{s.perplexity:.2f}",
				f"{s.accuracy:.2%}",
			]
			for name, s in rows
		]
		widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]
		lines = ["  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths)))]
		lines.append("  ".join("-" * w for w in widths))
		for row in cells:
			lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
		return "\n".join(lines)


def plan_windows(length: int, first: int, context: int, stride: int) -> list[tuple[int, int, int]]:
	"""Windows `(begin, end, scored)` reading a sequence of `length` tokens whose tokens first..length-1 are scored.

	A window feeds tokens[begin:end] (at most `context`) and scores its last `scored` predictions, those
	of tokens end-scored+1 .. end. Together the windows score each of tokens first..length-1 once (see
	the module doc); the first window starts as late as it can while still giving token `first` at
	least context - stride tokens before it, so a long prompt before the scored tokens costs nothing.
	"""
	if not 1 <= first <= length:
		raise ValueError(f"first scored token {first} outside 1..{length}")
	if not 1 <= stride <= context:
		raise ValueError(f"stride {stride} must be between 1 and the context length {context}")
	last = length - 1  # index of the last token scored
	if first > last:
		return []
	begin = max(0, min(first - 1 - (context - stride), last - context))
	end = min(begin + context, last)
	windows = [(begin, end, end - first + 1)]
	while end < last:
		new_end = min(end + stride, last)
		windows.append((max(0, new_end - context), new_end, new_end - end))
		end = new_end
	return windows


@dataclass
class Batch:
	"""Windows of several sequences, right-padded, and where their scored predictions are."""

	tokens: torch.Tensor  # [B, T] inputs
	rows: torch.Tensor  # [N] row of each scored prediction
	columns: torch.Tensor  # [N] its position in the row
	targets: torch.Tensor  # [N] the token it should predict
	owners: np.ndarray  # [N] index of the sequence it belongs to


class Scorer:
	"""Scores tokens of many sequences with a model, in batches of windows (see the module doc)."""

	def __init__(
		self,
		model: Transformer,
		*,
		stride: int | None = None,
		batch_size: int | None = None,
		progress: bool = True,
	) -> None:
		config = model.config
		self.model = model
		self.context = config.context_length
		self.stride = stride or max(1, self.context // 2)
		if not 1 <= self.stride <= self.context:
			raise UsageError(f"--stride {self.stride}: must be between 1 and the model's context length {self.context}")
		self.batch_size = batch_size or max(1, min(MAX_BATCH, LOGITS_BUDGET // (4 * self.context * config.vocab_size)))
		self.progress = progress

	@property
	def device(self) -> torch.device:
		return self.model.token_embedding.weight.device

	def batches(self, sequences: Sequence[np.ndarray], first: Sequence[int]) -> tuple[list[Batch], int]:
		"""The batches that score tokens first[i].. of sequences[i], longest windows first; and the scored count."""
		windows = [
			(i, *window)
			for i, (sequence, start) in enumerate(zip(sequences, first))
			for window in plan_windows(len(sequence), start, self.context, self.stride)
		]
		windows.sort(key=lambda w: w[1] - w[2])  # longest first: one padded length per batch, small waste
		batches = []
		for start in range(0, len(windows), self.batch_size):
			group = windows[start : start + self.batch_size]
			width = max(end - begin for _, begin, end, _ in group)
			tokens = np.full((len(group), width), PADDING, dtype=np.int64)
			rows, columns, targets, owners = [], [], [], []
			for row, (i, begin, end, scored) in enumerate(group):
				sequence = sequences[i]
				tokens[row, : end - begin] = sequence[begin:end]
				rows.append(np.full(scored, row))
				columns.append(np.arange(end - begin - scored, end - begin))
				targets.append(sequence[end - scored + 1 : end + 1])
				owners.append(np.full(scored, i))
			batches.append(
				Batch(
					torch.from_numpy(tokens),
					torch.from_numpy(np.concatenate(rows)),
					torch.from_numpy(np.concatenate(columns)),
					torch.from_numpy(np.concatenate(targets).astype(np.int64)),
					np.concatenate(owners),
				)
			)
		return batches, sum(w[3] for w in windows)

	@torch.inference_mode()
	def score(
		self, sequences: Sequence[np.ndarray], first: Sequence[int], *, desc: str = "evaluate"
	) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
		"""Summed NLL (nats), correct predictions and scored tokens of each sequence, tokens first[i] onwards."""
		model, device = self.model, self.device
		model.eval()
		nll = np.zeros(len(sequences), dtype=np.float64)
		correct = np.zeros(len(sequences), dtype=np.int64)
		count = np.zeros(len(sequences), dtype=np.int64)
		batches, total = self.batches(sequences, first)
		with tqdm(total=total, desc=desc, unit="tok", unit_scale=True, disable=not self.progress) as bar:
			for batch in batches:
				# the output layer only where a token is scored: about half the positions of a long document
				select = (batch.rows.to(device), batch.columns.to(device))
				scored = model(batch.tokens.to(device), select=select).float()
				targets = batch.targets.to(device)
				losses = F.cross_entropy(scored, targets, reduction="none")
				hits = scored.argmax(dim=-1) == targets
				np.add.at(nll, batch.owners, losses.double().cpu().numpy())
				np.add.at(correct, batch.owners, hits.cpu().numpy())
				np.add.at(count, batch.owners, 1)
				bar.update(len(batch.owners))
		return nll, correct, count


def evaluate(
	model: str | Path | Transformer,
	texts: Mapping[str, Iterable[str]] | Iterable[str],
	*,
	tokenizer: Tokenizer | str | Path | None = None,
	stride: int | None = None,
	batch_size: int | None = None,
	device: str = "auto",
	progress: bool = True,
) -> Evaluation:
	"""Score `texts` with `model`: bits per byte, bits per character, loss, perplexity, accuracy.

	model: a Transformer, or a path `load_model` reads (run or checkpoint directory, .safetensors,
	released .pt). texts: documents, or {name: documents} for a Score per name (`read_texts`,
	`dataset_texts`). tokenizer: the model's, or its vocab.txt (default: found next to the model).
	"""
	name = str(model) if isinstance(model, str | Path) else "model"
	model, tokenizer = load_model_and_tokenizer(model, tokenizer, device)
	runs.check_vocab(tokenizer.vocab_size, model.config.vocab_size, "the tokenizer (--vocab)", name)
	if not isinstance(texts, Mapping):
		texts = {"text": texts}
	scorer = Scorer(model, stride=stride, batch_size=batch_size, progress=progress)
	result = Evaluation(name, scorer.context, scorer.stride)
	start = time.perf_counter()
	for source, documents in texts.items():
		documents = [d for d in (d.strip() for d in documents) if d]
		if not documents:
			raise UsageError(f"{source}: no text to evaluate (every document is empty)")
		encoded = tokenizer.encode_batch(documents)
		sequences = [np.concatenate([[START_OF_TEXT], ids]).astype(np.int64) for ids in encoded]
		nll, correct, count = scorer.score(sequences, [1] * len(sequences), desc=f"evaluate {source}")
		score = Score(
			documents=len(documents),
			characters=sum(map(len, documents)),
			bytes=sum(len(d.encode("utf-8")) for d in documents),
			tokens=int(count.sum()),
			nll=float(nll.sum()),
			correct=int(correct.sum()),
		)
		result.sources[source] = score
		result.total.add(score)
	result.seconds = time.perf_counter() - start
	return result


def load_model_and_tokenizer(
	model: str | Path | Transformer, tokenizer: Tokenizer | str | Path | None = None, device: str = "auto"
) -> tuple[Transformer, Tokenizer]:
	"""The model at `model` (see `load_model`) in eval mode and its tokenizer (default: the vocab.txt found beside it)."""
	from dimgpt.device import inference_dtype, pick_device
	from dimgpt.model.loading import load_model

	if not isinstance(tokenizer, Tokenizer):
		if tokenizer is None:
			if not isinstance(model, str | Path):
				raise UsageError("give the tokenizer (or the path of its vocab.txt) of an already loaded model")
			tokenizer = runs.find_vocab(model)
			if tokenizer is None:
				raise NotFoundError(f"no vocab.txt found next to {model} nor in its run directory: pass --vocab")
		tokenizer = Tokenizer.load(tokenizer)
	if isinstance(model, str | Path):
		torch_device = pick_device(device)
		model = load_model(model, device=torch_device, dtype=inference_dtype(torch_device))
	return model, tokenizer


def read_texts(specs: Sequence[str], *, text_column: str = "text") -> dict[str, Iterator[str]]:
	"""{name: documents} of txt / jsonl / parquet files (one source each), through the project's source readers.

	A spec is `[NAME=]PATH` (a glob or several comma-separated paths of one type make one source) or
	`hf:DATASET_ID[:CONFIG]`; a .txt file is one document, a jsonl/parquet row one document.
	"""
	import dataclasses

	from dimgpt.data.create import source_from_spec
	from dimgpt.data.sources import read_texts as source_texts

	texts: dict[str, Iterator[str]] = {}
	for spec in specs:
		source = dataclasses.replace(source_from_spec(spec), text_column=text_column)
		if source.kind == "files" and not any(Path(p.strip()).exists() or "*" in p for p in source.path.split(",")):
			raise NotFoundError(f"--text {spec}: no such file; give txt, jsonl or parquet files")
		name, suffix = source.name, 2
		while name in texts:  # two files with the same stem
			name, suffix = f"{source.name}-{suffix}", suffix + 1
		texts[name] = source_texts(source)
	return texts


def dataset_texts(data_dir: str | Path, split: str = "validation") -> dict[str, Iterator[str]]:
	"""{source: raw documents} of one split of a dataset folder made by create-data, re-read from its sources.

	The shards keep each document's hash beside its tokens (`.sig.npy`), so the split's documents are
	found again in the raw source by hash, whatever create-data's filters and deduplication dropped:
	`validation` is exactly the text the training never saw, each document once, in source order.
	"""
	from dimgpt.config import SourceConfig, from_dict
	from dimgpt.data.sources import document_hash
	from dimgpt.data.sources import read_texts as source_texts
	from dimgpt.data.store import SPLITS, StoreError, dropped_documents, read_json, source_shards

	if split not in SPLITS:
		raise UsageError(f"--split {split}: a dataset has the splits {', '.join(SPLITS)}")
	data_dir = Path(data_dir)
	summary = read_json(data_dir / "data.json")

	def wanted(directory: Path) -> set[int]:
		hashes: set[int] = set()
		manifest = read_json(directory / "source.json")
		for stem, drop in zip(source_shards(directory, manifest, split), dropped_documents(directory, manifest, split)):
			path = stem.with_suffix(".sig.npy")
			if not path.is_file():
				raise StoreError(f"{path} is missing (a dataset made by an older version): run create-data again")
			rows = np.load(path, allow_pickle=False)[:, :2]
			low, high = (rows if drop is None else np.delete(rows, drop, axis=0)).astype(np.uint64).T  # merge's drops
			hashes.update((low | high << np.uint64(32)).tolist())
		return hashes

	def stream(name: str, manifest: dict[str, Any]) -> Iterator[str]:
		source = from_dict(SourceConfig, manifest["settings"]["source"])
		hashes = wanted(data_dir / "pretrain" / name)
		for text in source_texts(source):
			if not hashes:
				return
			text = text.strip()
			key = document_hash(text)
			if key in hashes:
				hashes.discard(key)  # an exact duplicate further on was dropped by create-data
				yield text

	return {name: stream(name, manifest) for name, manifest in summary.get("pretrain", {}).items()}


def evaluate_command(args: Any) -> int:
	"""`python -m dimgpt evaluate`: print the table (and write --json) of text scores or lm-eval tasks."""
	import importlib.util
	import json

	if args.tasks:
		if importlib.util.find_spec("lm_eval") is None:
			raise UsageError(
				"--tasks needs lm-evaluation-harness, an optional dependency: "
				".venv/bin/pip install -r requirements-optional.txt"
			)
		from lm_eval.utils import make_table

		from dimgpt.harness import run_tasks

		results = run_tasks(
			args.model,
			[t.strip() for t in args.tasks.split(",") if t.strip()],
			tokenizer=args.vocab,
			num_fewshot=args.num_fewshot,
			limit=args.limit,
			stride=args.stride,
			batch_size=args.batch_size,
			device=args.device,
			progress=not args.no_progress,
		)
		print(make_table(results))
		record: dict[str, Any] = {k: results[k] for k in ("results", "versions", "n-shot", "config") if k in results}
	else:
		texts = (
			read_texts(args.text, text_column=args.text_column) if args.text else dataset_texts(args.data, args.split)
		)
		result = evaluate(
			args.model,
			texts,
			tokenizer=args.vocab,
			stride=args.stride,
			batch_size=args.batch_size,
			device=args.device,
			progress=not args.no_progress,
		)
		print(result.table())
		print(
			f"{result.total.tokens:,} tokens in {result.seconds:.1f} s ({result.tokens_per_second:,.0f} tokens/s); "
			f"context {result.context_length}, stride {result.stride}"
		)
		record = result.as_dict()
	if args.json:
		Path(args.json).parent.mkdir(parents=True, exist_ok=True)
		Path(args.json).write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
		print(f"results written to {args.json}")
	return 0
