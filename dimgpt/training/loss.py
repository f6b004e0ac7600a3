"""The one training and validation objective: token cross-entropy weighted per target token.

Every target token carries a weight (`w` of a loader's `(x, y, w)` batch): 1 for pretraining text,
1 for answers and `instruction_loss_weight` for instructions in fine-tuning, 0 for padding and for
instructions in validation. Sums, not means, so that micro-batches, ranks and validation batches
add up before the one division by the total weight.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def weighted_sums(logits: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
	"""(weighted sum of the token losses, weighted count of argmax hits) of logits [B, T, V] for y, w [B, T]."""
	losses = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="none")
	loss_sum = (losses * w.flatten()).sum()
	with torch.no_grad():
		hits = ((logits.argmax(dim=-1) == y).float() * w).sum()
	return loss_sum, hits
