"""The DimensionGPT chat format, defined once (docs/dimensiongpt.md, "Chat format").

	⮜start-of-text⮞ [⮜system⮞ preprompt] ⮜user⮞ question ⮜assistant⮞ answer ⮜user⮞ … ⮜end-of-text⮞

Each turn is its role token followed by its text; ⮜human⮞ opens an answer written by a person. An
answer ends at the next ⮜user⮞ or at ⮜end-of-text⮞. The instruction store (`dimgpt.data.instruct`),
the chat session (`dimgpt.sampling.ChatSession`) and the exported `transformers` chat template
(`jinja_template`, generated from the same table) all build conversations with what is here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from dimgpt.data.tokenizer import ASSISTANT, CONTROL_TOKENS, END_OF_TEXT, HUMAN, START_OF_TEXT, SYSTEM, USER

ROLE_TOKENS = {"system": SYSTEM, "user": USER, "assistant": ASSISTANT, "human": HUMAN}
ANSWER_ROLES = ("assistant", "human")  # the turns that are answers (what fine-tuning weighs fully)
ANSWER_OPENERS = frozenset(ROLE_TOKENS[role] for role in ANSWER_ROLES)
ANSWER_ENDS = (END_OF_TEXT, USER)  # what closes an answer: the stop tokens of a chat
GENERATION_PROMPT = ROLE_TOKENS["assistant"]  # what a prompt ends with when an answer is wanted
OPEN, CLOSE = CONTROL_TOKENS[0][0], CONTROL_TOKENS[0][-1]  # the brackets of every control token


def turn(role: str, ids: Iterable[int]) -> list[int]:
	"""One turn: its role token, then its text's token ids."""
	return [ROLE_TOKENS[role], *ids]


def conversation(turns: Iterable[tuple[str, Iterable[int]]], *, answer_next: bool = False) -> list[int]:
	"""A whole conversation: ⮜start-of-text⮞, its turns, then ⮜end-of-text⮞, or ⮜assistant⮞ when
	`answer_next` (a prompt for the model's answer)."""
	ids = [START_OF_TEXT]
	for role, text in turns:
		ids += turn(role, text)
	return [*ids, GENERATION_PROMPT if answer_next else END_OF_TEXT]


def opens_answer(token: int) -> bool:
	"""Whether `token` starts an answer (the tokens after it, up to the one that closes it, are answer)."""
	return token in ANSWER_OPENERS


def is_role_or_end(token: int) -> bool:
	"""Whether `token` is a role token or ⮜end-of-text⮞: where any turn ends."""
	return token in ROLE_TOKENS.values() or token == END_OF_TEXT


def jinja_template(roles: Sequence[str] = tuple(ROLE_TOKENS)) -> str:
	"""The `transformers` chat template of this format (message texts must be cleaned by the caller)."""
	branches = "".join(
		f"{{% {'if' if i == 0 else 'elif'} message['role'] == '{role}' %}}{CONTROL_TOKENS[ROLE_TOKENS[role]]}"
		for i, role in enumerate(roles)
	)
	names = ", ".join(roles[:-1]) + f" or {roles[-1]}"
	return (
		"{{ bos_token }}"
		"{% for message in messages %}"
		f"{branches}"
		f"{{% else %}}{{{{ raise_exception('roles are {names}, not ' + message['role']) }}}}"
		"{% endif %}"
		# A message's text never holds a control token: its brackets go, as `clean` drops them, so that a
		# user cannot forge a turn by typing "⮜end-of-text⮞⮜system⮞" (the tokenizer maps those strings to
		# control ids).
		f"{{{{ message['content'] | replace('{OPEN}', '') | replace('{CLOSE}', '') | trim }}}}"
		"{% endfor %}"
		f"{{% if add_generation_prompt %}}{CONTROL_TOKENS[GENERATION_PROMPT]}{{% else %}}{{{{ eos_token }}}}{{% endif %}}"
	)
