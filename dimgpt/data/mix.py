"""The fine-tuning conversation mix of DimensionGPT, as configuration, and the loader that draws it.

Training conversations are drawn group by group at set ratios (DimensionGPT: human-written 9.9 %,
chatbot-written 90 %, self-identity 0.1 %); each one gets a system preprompt from a pool with
probability `preprompt_ratio`. Validation runs over the held-out conversations, in a fixed order,
all with the same preprompt, and counts the loss on answer tokens only.

A group is the `group` label the instruction store keeps for each conversation (`SourceConfig.group`,
or the source name when empty).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

RESOURCES = Path(__file__).resolve().parents[2] / "resources" / "instruct"


def load_preprompts(path: str | Path | None = None) -> tuple[str, ...]:
	"""The pool of system preprompts: one per line of a UTF-8 text file, blank lines skipped."""
	path = Path(path) if path is not None else RESOURCES / "preprompts.txt"
	try:
		lines = path.read_text(encoding="utf-8").splitlines()
	except FileNotFoundError:
		raise FileNotFoundError(f"preprompt pool not found: {path} (one preprompt per line)") from None
	return tuple(line.strip() for line in lines if line.strip())


@dataclass(frozen=True)
class MixGroup:
	"""Conversations carrying the store label `name`, drawn for a `ratio` share of training rows."""

	name: str
	ratio: float

	def __post_init__(self) -> None:
		if self.ratio < 0:
			raise ValueError(f"mix group {self.name!r}: ratio must be >= 0, got {self.ratio}")


DIMENSIONGPT_GROUPS = (MixGroup("human", 0.099), MixGroup("chatbot", 0.9), MixGroup("identity", 0.001))


@dataclass(frozen=True)
class InstructMix:
	"""The conversation mix of fine-tuning.

	groups: drawn at their ratios (normalised over the groups the store actually holds).
	preprompt_ratio: share of training conversations that get a system preprompt from `preprompts`.
	validation_preprompt: the one preprompt of every validation conversation ("" = `preprompts[0]`,
	None = no preprompt).
	"""

	groups: tuple[MixGroup, ...] = DIMENSIONGPT_GROUPS
	preprompt_ratio: float = 0.5
	preprompts: tuple[str, ...] = field(default_factory=load_preprompts)
	validation_preprompt: str | None = ""

	def __post_init__(self) -> None:
		names = [g.name for g in self.groups]
		if not self.groups or sum(g.ratio for g in self.groups) <= 0:
			raise ValueError("InstructMix: give at least one group with a positive ratio")
		if len(set(names)) != len(names):
			raise ValueError(f"InstructMix: group names must be unique, got {names}")
		if not 0 <= self.preprompt_ratio <= 1:
			raise ValueError(f"InstructMix: preprompt_ratio must be in [0, 1], got {self.preprompt_ratio}")
		if any(not p.strip() for p in self.preprompts):
			raise ValueError("InstructMix: empty preprompt in the pool")
		if (self.preprompt_ratio > 0 or self.validation_preprompt == "") and not self.preprompts:
			raise ValueError(
				"InstructMix: the preprompt pool is empty (set preprompt_ratio=0 and validation_preprompt=None)"
			)
		if self.validation_preprompt == "":
			object.__setattr__(self, "validation_preprompt", self.preprompts[0])

	def ratios(self, available: set[str] | None = None) -> dict[str, float]:
		"""Group name -> probability, renormalised over the `available` groups (all when None)."""
		kept = {g.name: g.ratio for g in self.groups if available is None or g.name in available}
		total = sum(kept.values())
		if total <= 0:
			raise ValueError(
				f"InstructMix: none of the groups {[g.name for g in self.groups]} has conversations "
				f"(the store holds {sorted(available or ())}); check the `group` of the instruction sources"
			)
		return {name: ratio / total for name, ratio in kept.items() if ratio > 0}
