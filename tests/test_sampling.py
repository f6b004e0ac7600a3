"""Generation: cache equivalence through the sampler, stopping, banned control tokens, penalty, the two
sampling profiles (standard against transformers' own warpers, dimensiongpt against the release's rules), chat."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from support import small_config

from dimgpt.data.tokenizer import (
	ASSISTANT,
	END_OF_TEXT,
	NEW_LINE,
	PADDING,
	START_OF_TEXT,
	SYSTEM,
	TAB,
	USER,
	Tokenizer,
)
from dimgpt.model.transformer import Transformer
from dimgpt.sampling import (
	ChatSession,
	Sampler,
	SamplingConfig,
	TextPrinter,
	apply_repetition_penalty,
	filter_logits,
	release_choice,
)


def _model(vocab_size: int, seed: int = 0) -> Transformer:
	torch.manual_seed(seed)
	return Transformer(small_config(vocab_size=vocab_size, context_length=48, window=8, n_layers=3)).eval()


@pytest.mark.slow  # many generation steps
def test_cached_generation_has_the_logits_of_full_recomputation_at_every_step():
	"""Greedy, 60 new tokens after a 5-token prompt: past the window (8) and the context (48)."""
	sampler = Sampler(_model(200))
	settings = SamplingConfig(temperature=0, repetition_penalty=1.0, max_new_tokens=60)
	prompt = [START_OF_TEXT, 50, 60, 70, 80]
	cached = list(sampler.steps([prompt], settings, stop_ids=()))
	full = list(sampler.steps([prompt], settings, stop_ids=(), use_cache=False))
	assert len(cached) == len(full) == 60
	for a, b in zip(cached, full):
		assert torch.equal(a.tokens, b.tokens)
		torch.testing.assert_close(a.logits, b.logits, rtol=1e-5, atol=1e-5)


def test_batched_prompts_give_the_outputs_of_single_prompts():
	sampler = Sampler(_model(200))
	settings = SamplingConfig(temperature=0, max_new_tokens=30)
	prompts = [
		[START_OF_TEXT, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22],
		[START_OF_TEXT, 40],
		[START_OF_TEXT, 99, 98],
	]
	batched = sampler.generate_ids(prompts, settings, stop_ids=())
	assert batched == [sampler.generate_ids([p], settings, stop_ids=())[0] for p in prompts]


def test_seed_makes_sampling_reproducible():
	sampler = Sampler(_model(200))
	settings = SamplingConfig(temperature=1.0, top_p=1.0, max_new_tokens=40, seed=123)
	prompt = [[START_OF_TEXT, 42]]
	first = sampler.generate_ids(prompt, settings, stop_ids=())
	assert sampler.generate_ids(prompt, settings, stop_ids=()) == first
	other = SamplingConfig(temperature=1.0, top_p=1.0, max_new_tokens=40, seed=124)
	assert sampler.generate_ids(prompt, other, stop_ids=()) != first


@pytest.mark.slow  # many generation steps
def test_control_tokens_are_never_sampled():
	model = _model(40)
	banned = [i for i in range(10) if i not in (TAB, NEW_LINE)]
	with torch.no_grad():  # make control tokens the likeliest: their embeddings (tied output rows) grow
		model.token_embedding.weight[banned] *= 30
	sampler = Sampler(model)
	settings = SamplingConfig(temperature=2.0, top_p=1.0, repetition_penalty=0.0, max_new_tokens=300, seed=0)
	full = list(sampler.steps([[START_OF_TEXT, 20]], settings, stop_ids=()))
	probs = torch.stack([s.logits[0] for s in full]).softmax(-1)
	assert probs[:, banned].sum(-1).mean() > 0.5  # without the ban most samples would be control tokens
	tokens = [int(s.tokens[0]) for s in full]
	assert len(tokens) == 300 and not set(tokens) & set(banned)


def test_tab_and_new_line_are_text_and_may_be_sampled(tokenizer: Tokenizer):
	for token, char in ((NEW_LINE, "\n"), (TAB, "\t")):
		model = _model(tokenizer.vocab_size)
		with torch.no_grad():  # make this token the likeliest
			model.token_embedding.weight[token] *= 30
		sampler = Sampler(model, tokenizer)
		text = sampler.generate("Bonjour", SamplingConfig(temperature=1.0, top_p=1.0, max_new_tokens=20, seed=0))
		assert char in text
		chat = ChatSession(sampler, settings=SamplingConfig(temperature=0, max_new_tokens=10))
		assert char in chat.ask("Qui es-tu ?")


def test_generation_stops_at_end_of_text_which_is_not_returned():
	model = _model(40)
	with torch.no_grad():
		model.token_embedding.weight[END_OF_TEXT] *= 30
	sampler = Sampler(model)
	settings = SamplingConfig(temperature=1.0, top_p=1.0, repetition_penalty=0.0, max_new_tokens=200, seed=0)
	steps = list(sampler.steps([[START_OF_TEXT, 20]], settings))
	assert bool(steps[-1].stopped[0]) and int(steps[-1].tokens[0]) == END_OF_TEXT
	assert all(not bool(s.stopped[0]) for s in steps[:-1])
	out = sampler.generate_ids([[START_OF_TEXT, 20]], settings)[0]
	assert out == [int(s.tokens[0]) for s in steps[:-1]]
	assert END_OF_TEXT not in out and len(out) < 200


def test_rows_of_a_batch_stop_independently():
	model = _model(40)
	with torch.no_grad():
		model.token_embedding.weight[END_OF_TEXT] *= 30
	sampler = Sampler(model)
	settings = SamplingConfig(temperature=1.0, top_p=1.0, repetition_penalty=0.0, max_new_tokens=200, seed=3)
	outs = sampler.generate_ids([[START_OF_TEXT, 20], [START_OF_TEXT, 21, 22]], settings)
	assert all(END_OF_TEXT not in o for o in outs)
	assert len({len(o) for o in outs}) == 2  # different stopping points, each kept


def test_repetition_penalty_is_the_release_formula():
	"""A loop over the history, written as the release does, against the vectorised version."""
	g = torch.Generator().manual_seed(0)
	logprobs = torch.randn(2, 30, generator=g).log_softmax(-1)
	history = torch.randint(0, 30, (2, 25), generator=g)
	context, penalty = 16, 0.7
	expected = logprobs.clone()
	for b in range(2):
		proximity = context
		for i in reversed(range(max(history.shape[1] - context, 0), history.shape[1])):
			expected[b, history[b, i]] *= 1 + penalty * proximity / context
			proximity -= 1
	torch.testing.assert_close(apply_repetition_penalty(logprobs, history, penalty, context), expected)
	assert torch.equal(apply_repetition_penalty(logprobs, history, 0.0, context), logprobs)


def test_repetition_penalty_reduces_repeats():
	sampler = Sampler(_model(200, seed=1))
	prompt = [[START_OF_TEXT, 30]]
	plain = sampler.generate_ids(prompt, SamplingConfig(temperature=0, repetition_penalty=0.0, max_new_tokens=60), ())
	penalised = sampler.generate_ids(
		prompt, SamplingConfig(temperature=0, repetition_penalty=1.0, max_new_tokens=60), ()
	)
	assert len(set(penalised[0])) > len(set(plain[0]))


def test_top_k_and_top_p():
	logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
	kept = lambda k, p: torch.isfinite(filter_logits(logits, k, p))[0].tolist()  # noqa: E731
	assert kept(0, 1.0) == [True, True, True, True]
	assert kept(3, 1.0) == [True, True, True, False]
	assert kept(0, 0.5) == [True, False, False, False]  # 0.5 reached by the first token
	assert kept(0, 0.7) == [True, True, False, False]
	assert kept(0, 0.81) == [True, True, True, False]
	assert kept(0, 0.01) == [True, False, False, False]
	assert kept(2, 0.99) == [True, True, False, False]
	# Order does not matter.
	shuffled = logits[:, [2, 0, 3, 1]]
	assert torch.isfinite(filter_logits(shuffled, 0, 0.7))[0].tolist() == [False, True, False, True]


def test_greedy_takes_the_argmax():
	model = _model(200)
	sampler = Sampler(model)
	prompt = [START_OF_TEXT, 77, 78]
	with torch.no_grad():
		logits = model(torch.tensor([prompt]))[0, -1]
	logits[:10] = -math.inf
	out = sampler.generate_ids([prompt], SamplingConfig(temperature=0, repetition_penalty=0.0, max_new_tokens=1), ())
	assert out == [[int(logits.argmax())]]


def test_standard_profile_is_transformers_rules():
	"""Temperature, top-k, top-p and min-p give what transformers' own logits warpers give, token for token."""
	from transformers.generation.logits_process import (
		LogitsProcessorList,
		MinPLogitsWarper,
		TemperatureLogitsWarper,
		TopKLogitsWarper,
		TopPLogitsWarper,
	)

	g = torch.Generator().manual_seed(0)
	for temperature, top_k, top_p, min_p in [
		(0.5, 0, 0.9, 0.0),
		(1.3, 20, 0.5, 0.1),
		(0.8, 0, 1.0, 0.05),
		(1.0, 5, 0.3, 0.0),
	]:
		logits = torch.randn(8, 300, generator=g) * 3
		warpers = [TemperatureLogitsWarper(temperature)]
		warpers += [TopKLogitsWarper(top_k)] if top_k else []
		warpers += [TopPLogitsWarper(top_p)] if top_p < 1 else []
		warpers += [MinPLogitsWarper(min_p)] if min_p else []
		theirs = LogitsProcessorList(warpers)(None, logits.clone())
		ours = filter_logits(logits / temperature, top_k, top_p, min_p)
		assert torch.equal(torch.isfinite(ours), torch.isfinite(theirs))
		torch.testing.assert_close(ours.softmax(-1), theirs.softmax(-1))


def plain_release_top_p(probabilities: np.ndarray, top_p: float) -> list[int]:
	"""The release's boundary as its sampler writes it (NumPy float32): the kept tokens, a loop."""
	order = list(np.argsort(-probabilities))
	total, kept = np.float32(0), []
	for token in order:
		total = np.float32(total + probabilities[token])
		if total >= max(top_p, probabilities[order[0]] + 1e-6):
			break
		kept.append(int(token))
	return sorted(kept)


def test_release_top_p_boundary():
	logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
	kept = lambda p, rule: torch.isfinite(filter_logits(logits, top_p=p, top_p_rule=rule))[0].tolist()  # noqa: E731
	assert kept(0.7, "standard") == [True, True, False, False]  # the token that reaches 0.7 stays
	assert kept(0.7, "dimensiongpt") == [True, False, False, False]  # ... and goes
	assert kept(0.01, "dimensiongpt") == [True, False, False, False]  # never less than the top token
	g = torch.Generator().manual_seed(1)
	for top_p in (0.3, 0.9, 0.99, 1.0):
		logits = torch.randn(6, 2_000, generator=g) * 4
		ours = torch.isfinite(filter_logits(logits, top_p=top_p, top_p_rule="dimensiongpt"))
		for row, kept_row in zip(logits.softmax(-1).numpy(), ours.numpy()):
			assert np.flatnonzero(kept_row).tolist() == plain_release_top_p(row, top_p)
	# top-p 1.0 under the release's rule is not "off": the tail after the float32 sum reaches 1 goes.
	tail = torch.tensor([[0.5, 0.5 - 1e-9, 1e-9, 1e-10]]).log()
	assert torch.isfinite(filter_logits(tail, top_p=1.0, top_p_rule="dimensiongpt")).sum() < 4


def test_profiles():
	standard, release = SamplingConfig.for_profile("standard"), SamplingConfig.for_profile("dimensiongpt")
	assert standard == SamplingConfig()
	assert (standard.temperature, standard.top_p, standard.repetition_penalty, standard.boundary) == (
		0.5,
		0.9,
		1.0,
		"standard",
	)
	assert (release.temperature, release.top_p, release.repetition_penalty, release.boundary) == (
		0.9,
		1.0,
		0.0,
		"dimensiongpt",
	)
	assert SamplingConfig.for_profile("dimensiongpt", top_p_rule="standard").boundary == "standard"
	with pytest.raises(ValueError, match="profile 'nope' does not exist"):
		SamplingConfig.for_profile("nope")
	with pytest.raises(ValueError, match="no top-k or min-p"):
		SamplingConfig.for_profile("dimensiongpt", top_k=5)
	with pytest.raises(ValueError, match="0 < top_p ≤ 1"):
		SamplingConfig(top_p=0)


def test_dimensiongpt_greedy_takes_the_argmax_before_banning():
	model = _model(40)
	with torch.no_grad():  # ⮜padding⮞ the likeliest token
		model.token_embedding.weight[PADDING] *= 30
	sampler = Sampler(model)
	greedy = {"temperature": 0, "max_new_tokens": 5}
	release = sampler.generate_ids([[START_OF_TEXT, 20]], SamplingConfig.for_profile("dimensiongpt", **greedy), ())
	standard = sampler.generate_ids([[START_OF_TEXT, 20]], SamplingConfig.for_profile("standard", **greedy), ())
	assert PADDING in release[0] and PADDING not in standard[0]


def test_dimensiongpt_adds_user_to_end_of_text():
	# ⮜user⮞ 0.6, ⮜end-of-text⮞ 0.1, token 20 0.3: the release's chat rule gives end-of-text 0.7, user never.
	probs = np.full(40, 1e-12, dtype=np.float32)
	probs[[USER, END_OF_TEXT, 20]] = [0.6, 0.1, 0.3]
	settings = SamplingConfig.for_profile("dimensiongpt", temperature=1.0, top_p_rule="standard")  # top-p off
	banned = np.zeros(40, dtype=bool)
	banned[[0, 1, 2, 5, 6, 7, 8]] = True  # the release's banned control tokens
	generator = torch.Generator().manual_seed(0)
	picks = [release_choice(np.log(probs), [], settings, 16, banned, generator) for _ in range(2_000)]
	assert set(picks) == {END_OF_TEXT, 20}
	assert abs(picks.count(END_OF_TEXT) / 2_000 - 0.7) < 0.04
	# With the release's own boundary at top-p 1.0, the float32 sum reaches 1 at token 20, which goes.
	release = replace(settings, top_p_rule=None)
	assert {release_choice(np.log(probs), [], release, 16, banned, generator) for _ in range(200)} == {END_OF_TEXT}
	# Through the sampler: plain generation (stops at end-of-text only) never emits the banned tokens.
	model = _model(40)
	with torch.no_grad():
		model.token_embedding.weight[[0, 1, 2, 5, 6, 7, 8]] *= 30
	steps = list(Sampler(model).steps([[START_OF_TEXT, 20]], replace(settings, max_new_tokens=100, seed=0), ()))
	assert len(steps) == 100 and not {int(s.tokens[0]) for s in steps} & {0, 1, 2, 5, 6, 7, 8}


def test_text_generation_and_streaming(tokenizer: Tokenizer):
	sampler = Sampler(_model(tokenizer.vocab_size), tokenizer)
	settings = SamplingConfig(max_new_tokens=40, seed=5)
	pieces: list[str] = []
	text = sampler.generate("Bonjour", settings, stream=pieces.append, line_width=20)
	assert "".join(pieces).replace("\n", "").replace(" ", "") == text.replace("\n", "").replace(" ", "")
	assert text == sampler.generate("Bonjour", settings)
	greedy = SamplingConfig(temperature=0, max_new_tokens=20)
	assert sampler.generate_batch(["La ville", "Bonjour"], greedy)[1] == sampler.generate("Bonjour", greedy)


def test_text_printer_wraps_at_a_space(tokenizer: Tokenizer):
	words = tokenizer.encode(" ".join(["la ville est belle"] * 10))
	out: list[str] = []
	printer = TextPrinter(tokenizer, out.append, line_width=25)
	for token in words:
		printer(token)
	lines = "".join(out).split("\n")
	assert len(lines) > 3
	# A line breaks at the space that would pass the width: it overruns only by the end of a word begun before
	# (the tokenizer splits "ville" into " v", "il", "le").
	assert all(len(line.rsplit(" ", 1)[0]) <= 25 for line in lines)
	assert " ".join(lines) == tokenizer.decode(words)


def test_chat_prompt_format_and_history(tokenizer: Tokenizer):
	sampler = Sampler(_model(tokenizer.vocab_size), tokenizer)
	chat = ChatSession(sampler, system="Tu es un assistant.", settings=SamplingConfig(max_new_tokens=10, seed=0))
	assert chat.prompt_ids("Qui es-tu ?") == [
		START_OF_TEXT,
		SYSTEM,
		*tokenizer.encode("Tu es un assistant."),
		USER,
		*tokenizer.encode("Qui es-tu ?"),
		ASSISTANT,
	]
	answer = chat.ask("Qui es-tu ?")
	assert answer == tokenizer.decode(chat.turns[0][1])
	second = chat.prompt_ids("Paris ?")
	first_turn = [USER, *tokenizer.encode("Qui es-tu ?"), ASSISTANT, *chat.turns[0][1]]
	assert second[: 2 + len(tokenizer.encode("Tu es un assistant."))][-1] != USER
	assert second[-len(first_turn) - len(tokenizer.encode("Paris ?")) - 2 :][: len(first_turn)] == first_turn
	assert second[-1] == ASSISTANT


def test_chat_history_is_trimmed_to_the_context(tokenizer: Tokenizer):
	sampler = Sampler(_model(tokenizer.vocab_size), tokenizer)
	settings = SamplingConfig(max_new_tokens=8, seed=0)
	chat = ChatSession(sampler, system="Tu es un assistant.", settings=settings)
	for question in ["Bonjour", "Qui es-tu ?", "La ville est belle au printemps ?", "Paris ?"]:
		chat.ask(question)
	ids = chat.prompt_ids("Et la Seine ?")
	assert len(ids) <= 48 - 8
	assert ids[:2] == [START_OF_TEXT, SYSTEM]  # the preprompt stays
	assert ids[-len(tokenizer.encode("Et la Seine ?")) - 2 :] == [USER, *tokenizer.encode("Et la Seine ?"), ASSISTANT]
	assert len(chat.turns) == 4 and ids.count(USER) < 5  # the oldest turns went


def test_chat_stops_at_user_and_end_of_text(tokenizer: Tokenizer):
	model = _model(tokenizer.vocab_size)
	with torch.no_grad():
		model.token_embedding.weight[USER] *= 30
	chat = ChatSession(
		Sampler(model, tokenizer), settings=SamplingConfig(temperature=1.0, top_p=1.0, max_new_tokens=200, seed=0)
	)
	chat.ask("Bonjour")
	assert len(chat.turns[0][1]) < 200 and USER not in chat.turns[0][1]


def test_tokenizer_larger_than_the_model_is_an_error(tokenizer: Tokenizer):
	with pytest.raises(ValueError, match=rf"{tokenizer.vocab_size} tokens.* {tokenizer.vocab_size - 1}: .*vocab\.txt"):
		Sampler(_model(tokenizer.vocab_size - 1), tokenizer)


def test_spare_vocabulary_slots_are_never_sampled(tokenizer: Tokenizer):
	model = _model(tokenizer.vocab_size + 40)
	with torch.no_grad():  # make the spare slots the likeliest
		model.token_embedding.weight[tokenizer.vocab_size :] *= 30
	sampler = Sampler(model, tokenizer)
	settings = SamplingConfig(temperature=2.0, top_p=1.0, repetition_penalty=0.0, max_new_tokens=100, seed=0)
	steps = list(sampler.steps([[START_OF_TEXT, 20]], settings, stop_ids=()))
	probs = torch.stack([s.logits[0] for s in steps]).softmax(-1)
	assert probs[:, tokenizer.vocab_size :].sum(-1).mean() > 0.5  # without the mask most samples would be spare
	assert max(int(s.tokens[0]) for s in steps) < tokenizer.vocab_size
	assert sampler.generate("Bonjour", SamplingConfig(temperature=0, max_new_tokens=10)) == tokenizer.decode(
		sampler.generate_ids(
			[[START_OF_TEXT, *tokenizer.encode("Bonjour")]], SamplingConfig(temperature=0, max_new_tokens=10)
		)[0]
	)


def test_cli_generate_and_chat(tmp_path, tokenizer: Tokenizer, monkeypatch, capsys):
	from dimgpt.cli import main
	from dimgpt.errors import ExitCode
	from dimgpt.model.loading import save_model

	save_model(_model(tokenizer.vocab_size), tmp_path / "run" / "checkpoints" / "last")
	tokenizer.save(tmp_path / "run" / "vocab.txt")  # found next to the run without --vocab
	args = ["--model", str(tmp_path / "run"), "--max-new-tokens", "12", "--temperature", "0"]
	assert main(["generate", "Bonjour", *args, "--no-stream"]) == 0
	printed = capsys.readouterr().out
	sampler = Sampler(_model(tokenizer.vocab_size), tokenizer)
	expected = sampler.generate("Bonjour", SamplingConfig(temperature=0, max_new_tokens=12))
	assert printed == "Bonjour" + expected + "\n"

	answers = iter(["Qui es-tu ?", "/reset", "/quit"])
	monkeypatch.setattr("builtins.input", lambda prompt="": next(answers))
	assert main(["chat", *args, "--system", "Tu es un assistant."]) == 0
	chat = ChatSession(sampler, "Tu es un assistant.", SamplingConfig(temperature=0, max_new_tokens=12))
	assert chat.ask("Qui es-tu ?").replace(" ", "") in capsys.readouterr().out.replace(" ", "").replace("\n", "")

	answers = iter(["/system Sois bref.", "/system", "/reset", "/sytem oups", "/quit"])
	assert main(["chat", *args]) == 0
	assert capsys.readouterr().out.splitlines()[1:] == [
		"(system preprompt: 'Sois bref.'; conversation restarted)",
		"(no system preprompt; conversation restarted)",
		"(conversation forgotten)",
		"(unknown command /sytem: /reset, /system TEXT, /quit)",
	]

	assert main(["generate", "x", "--model", str(tmp_path / "missing.pt")]) == ExitCode.NOT_FOUND
	assert "no such file or folder" in capsys.readouterr().err

	# --profile picks the settings, flags override them.
	release = ["--model", str(tmp_path / "run"), "--max-new-tokens", "12", "--profile", "dimensiongpt", "--seed", "3"]
	assert main(["generate", "Bonjour", *release, "--no-stream"]) == 0
	expected = sampler.generate("Bonjour", SamplingConfig.for_profile("dimensiongpt", max_new_tokens=12, seed=3))
	assert capsys.readouterr().out == "Bonjour" + expected + "\n"
	assert main(["generate", "Bonjour", *release, "--temperature", "0", "--no-stream"]) == 0
	greedy = SamplingConfig.for_profile("dimensiongpt", temperature=0, max_new_tokens=12)
	assert capsys.readouterr().out == "Bonjour" + sampler.generate("Bonjour", greedy) + "\n"
	assert main(["generate", "x", *release, "--top-k", "5"]) == ExitCode.USAGE
	assert "no top-k or min-p" in capsys.readouterr().err
