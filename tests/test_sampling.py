"""Generation: cache equivalence through the sampler, stopping, banned control tokens, penalty, top-k/p, chat."""

from __future__ import annotations

import math

import pytest
import torch

from dimgpt.config import ModelConfig
from dimgpt.data.tokenizer import ASSISTANT, END_OF_TEXT, NEW_LINE, START_OF_TEXT, SYSTEM, TAB, USER, Tokenizer
from dimgpt.model.transformer import Transformer
from dimgpt.sampling import (
	ChatSession,
	Sampler,
	SamplingConfig,
	TextPrinter,
	apply_repetition_penalty,
	filter_top_k_top_p,
)

TEXTS = [
	"Bonjour, je m'appelle Paul et j'habite à Paris depuis dix ans.",
	"La ville est belle au printemps : les arbres fleurissent le long de la Seine.\nC'est la saison que je préfère.",
	"Qui es-tu ? Je suis un assistant qui répond en français aux questions qu'on lui pose.",
]


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
	return Tokenizer.train(TEXTS * 10, 600, progress=False)  # every authorised character is a token


def _model(vocab_size: int, seed: int = 0) -> Transformer:
	torch.manual_seed(seed)
	config = ModelConfig(
		vocab_size=vocab_size, context_length=48, window=8, dim=64, n_layers=3, n_heads=4, n_kv_heads=2
	)
	return Transformer(config).eval()


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
	kept = lambda k, p: torch.isfinite(filter_top_k_top_p(logits, k, p))[0].tolist()  # noqa: E731
	assert kept(0, 1.0) == [True, True, True, True]
	assert kept(3, 1.0) == [True, True, True, False]
	assert kept(0, 0.5) == [True, False, False, False]  # 0.5 reached by the first token
	assert kept(0, 0.7) == [True, True, False, False]
	assert kept(0, 0.81) == [True, True, True, False]
	assert kept(0, 0.01) == [True, False, False, False]
	assert kept(2, 0.99) == [True, True, False, False]
	# Order does not matter.
	shuffled = logits[:, [2, 0, 3, 1]]
	assert torch.isfinite(filter_top_k_top_p(shuffled, 0, 0.7))[0].tolist() == [False, True, False, True]


def test_greedy_takes_the_argmax():
	model = _model(200)
	sampler = Sampler(model)
	prompt = [START_OF_TEXT, 77, 78]
	with torch.no_grad():
		logits = model(torch.tensor([prompt]))[0, -1]
	logits[:10] = -math.inf
	out = sampler.generate_ids([prompt], SamplingConfig(temperature=0, repetition_penalty=0.0, max_new_tokens=1), ())
	assert out == [[int(logits.argmax())]]


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
	assert all(len(line) <= 25 for line in lines)
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
