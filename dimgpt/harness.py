"""lm-evaluation-harness on our models: `python -m dimgpt evaluate --model X --tasks TASKS`.

    python -m dimgpt evaluate --model runs/fr/pretrain --tasks french_bench_hellaswag,french_bench_arc_challenge
    python -m dimgpt evaluate --model runs/tiny/pretrain --tasks my_task.yaml --limit 100

`DimGPTLM` is an lm-eval model (registered as "dimgpt") that answers the harness's three requests with
our own code, not through the Hugging Face export, because:
- the text goes through our tokenizer, cleaning included; the exported tokenizer.json does only part
  of the cleaning (not unidecode's transliteration), so a task's text would get other ids than the
  model was trained on;
- log-likelihoods come from the same scorer as `evaluate --text` (`evaluation.Scorer`: batched
  windows, the same conditioning), so a harness perplexity task and our bits per byte agree, and it is
  faster on CPU than the `transformers` loop (bench/evaluate.py);
- the released `.pt` files and our checkpoints are used as they are: no export step, no second copy.

Requests. `loglikelihood(context, continuation)`: the pair is encoded as lm-eval's TemplateLM does
(the whole string, the context's ids being a prefix of it), ⮜start-of-text⮞ goes first, as at
training, and the continuation's tokens are scored given all that precedes them (at least
context - stride tokens, see `evaluation`); "greedy" means each of them was the most likely token.
`loglikelihood_rolling(text)`: the text's tokens after ⮜start-of-text⮞, exactly as `evaluate --text`.
`generate_until`: our sampler, greedy unless the task asks for a temperature, cut at the first stop
string.

Tasks are names known to lm-eval (FrenchBench's are `french_bench_*`; `lm-eval ls tasks` lists them)
or task YAML files; their datasets come from the Hugging Face hub (or its cache), local files for a
YAML whose `dataset_path` is a builder like json with `data_files`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

try:
	from lm_eval.api.model import TemplateLM
	from lm_eval.api.registry import register_model
except ImportError as error:  # optional dependency
	raise ImportError(
		"lm-evaluation-harness is not installed: `.venv/bin/pip install -r requirements-optional.txt` "
		f"(or pip install lm-eval) to run benchmark tasks ({error})"
	) from None

from dimgpt.data.tokenizer import END_OF_TEXT, START_OF_TEXT, Tokenizer
from dimgpt.errors import NotFoundError, UsageError
from dimgpt.evaluation import Scorer, load_model_and_tokenizer
from dimgpt.model.transformer import Transformer


@register_model("dimgpt")
class DimGPTLM(TemplateLM):
	"""An lm-eval model over a dimgpt Transformer and its tokenizer (see the module doc)."""

	backend = "causal"

	def __init__(
		self,
		pretrained: str | Path | Transformer,
		vocab: Tokenizer | str | Path | None = None,
		device: str = "auto",
		batch_size: int | str | None = None,
		stride: int | None = None,
		max_gen_toks: int = 256,
		progress: bool = True,
		**_: Any,
	) -> None:
		super().__init__()
		self.model, self.tokenizer = load_model_and_tokenizer(pretrained, vocab, device)
		batch = int(batch_size) if str(batch_size or "").isdigit() else None  # lm-eval's "auto" is ours by default
		self.scorer = Scorer(self.model, stride=stride, batch_size=batch, progress=progress)
		self.max_gen_toks = int(max_gen_toks)

	@property
	def eot_token_id(self) -> int:
		return END_OF_TEXT

	@property
	def prefix_token_id(self) -> int:
		return START_OF_TEXT

	@property
	def max_length(self) -> int:
		return self.model.config.context_length

	@property
	def device(self):
		return self.scorer.device

	@property
	def tokenizer_name(self) -> str:
		return f"dimgpt-{self.tokenizer.fingerprint}"

	def tok_encode(self, string: str, add_special_tokens: bool | None = None, **_: Any) -> list[int]:
		return self.tokenizer.encode(string)

	def tok_decode(self, tokens: list[int], **_: Any) -> str:
		return self.tokenizer.decode(tokens)

	def _loglikelihood_tokens(self, requests: list, disable_tqdm: bool = False, **_: Any) -> list[tuple[float, bool]]:
		sequences, first = [], []
		for _, context, continuation in requests:
			head = [] if context and context[0] == START_OF_TEXT else [START_OF_TEXT]
			sequences.append(np.array([*head, *context, *continuation], dtype=np.int64))
			first.append(len(head) + len(context))
		nll, correct, count = self.scorer.score(sequences, first, desc="loglikelihood")
		answers = []
		for i, (key, _, _) in enumerate(requests):
			answer = (-float(nll[i]), bool(correct[i] == count[i]))
			if key is not None:
				self.cache_hook.add_partial("loglikelihood", key, answer)
			answers.append(answer)
		return answers

	def loglikelihood_rolling(self, requests: list, disable_tqdm: bool = False) -> list[float]:
		texts = [request.args[0] for request in requests]
		sequences = [np.array([START_OF_TEXT, *ids], dtype=np.int64) for ids in self.tokenizer.encode_batch(texts)]
		nll, _, _ = self.scorer.score(sequences, [1] * len(sequences), desc="loglikelihood_rolling")
		answers = [-float(x) for x in nll]
		for text, answer in zip(texts, answers):
			self.cache_hook.add_partial("loglikelihood_rolling", (text,), answer)
		return answers

	def generate_until(self, requests: list, disable_tqdm: bool = False) -> list[str]:
		from dimgpt.sampling import Sampler, SamplingConfig

		sampler = Sampler(self.model, self.tokenizer)
		answers = []
		for request in requests:
			context, kwargs = request.args
			kwargs = dict(kwargs or {})
			until = kwargs.get("until") or []
			until = [until] if isinstance(until, str) else list(until)
			sample = kwargs.get("do_sample", False) and float(kwargs.get("temperature", 0.0)) > 0
			settings = SamplingConfig(
				temperature=float(kwargs["temperature"]) if sample else 0.0,
				top_p=float(kwargs.get("top_p", 1.0)),
				top_k=0,
				repetition_penalty=0.0,
				max_new_tokens=int(kwargs.get("max_gen_toks", self.max_gen_toks)),
				seed=0,
			)
			text = sampler.generate(context, settings)
			for stop in until:
				if stop:
					text = text.split(stop)[0]
			self.cache_hook.add_partial("generate_until", (context, request.args[1]), text)
			answers.append(text)
		return answers


def run_tasks(
	model: str | Path | Transformer,
	tasks: list[str],
	*,
	tokenizer: Tokenizer | str | Path | None = None,
	num_fewshot: int | None = None,
	limit: float | None = None,
	stride: int | None = None,
	batch_size: int | None = None,
	device: str = "auto",
	progress: bool = True,
) -> dict[str, Any]:
	"""Run lm-eval `tasks` (names or task YAML files) on `model`; lm-eval's results dict (`make_table` prints it)."""
	import lm_eval
	from lm_eval.tasks import TaskManager

	files = [Path(t) for t in tasks if t.endswith((".yaml", ".yml"))]
	for file in files:
		if not file.is_file():
			raise NotFoundError(f"--tasks: task file {file} not found")
	# A task file may include others beside it (`include:`), so its folder is searched too.
	manager = TaskManager(include_path=sorted({str(f.resolve().parent) for f in files}) or None)
	names = [t for t in tasks if not t.endswith((".yaml", ".yml"))]
	unknown = [n for n in names if n not in manager.all_tasks]
	if unknown:
		raise UsageError(
			f"--tasks: lm-eval knows no task {', '.join(unknown)}; `lm-eval ls tasks` lists them "
			"(FrenchBench's are french_bench_*), or give a task YAML file"
		)
	lm = DimGPTLM(model, tokenizer, device=device, batch_size=batch_size, stride=stride, progress=progress)
	if limit is not None and limit >= 1:
		limit = int(limit)
	results = lm_eval.simple_evaluate(
		model=lm,
		tasks=[str(f.resolve()) for f in files] + names,
		num_fewshot=num_fewshot,
		limit=limit,
		task_manager=manager,
		log_samples=False,
		bootstrap_iters=1000,
	)
	return results
