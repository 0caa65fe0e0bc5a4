"""A causal language model of a few thousand parameters and token sequences of different lengths, padded
per batch: the per-token loss tests (``test_per_item_loss.py``) and their two-process scenario use them."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional

from pytorch_accelerated.trainer import Trainer

VOCAB, PAD, IGNORE = 16, 0, -100


class TinyCausalLM(nn.Module):
    """Embedding, a causal convolution (each position sees itself and the two before), a head."""

    def __init__(self, dim: int = 24, seed: int = 0):
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.embed = nn.Embedding(VOCAB, dim)
            self.mix = nn.Conv1d(dim, dim, kernel_size=3)
            self.head = nn.Linear(dim, VOCAB)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        hidden = self.embed(input_ids).transpose(1, 2)  # (batch, dim, length)
        hidden = torch.relu(self.mix(functional.pad(hidden, (2, 0))))
        return self.head(hidden.transpose(1, 2))  # (batch, length, vocab)


class TokenSequences(torch.utils.data.Dataset):
    """Sequences of 2 to 14 tokens, each a sample ``{"input_ids", "labels"}`` (labels: the next tokens)."""

    def __init__(self, num_samples: int, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        lengths = torch.randint(3, 16, (num_samples,), generator=generator)
        self.sequences = [torch.randint(1, VOCAB, (int(n),), generator=generator) for n in lengths]

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sequence = self.sequences[index]
        return {"input_ids": sequence[:-1], "labels": sequence[1:]}


def pad_batch(samples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Right-pad a batch to its longest sequence: inputs with PAD, labels with IGNORE."""
    length = max(len(sample["input_ids"]) for sample in samples)
    input_ids = torch.full((len(samples), length), PAD)
    labels = torch.full((len(samples), length), IGNORE)
    for row, sample in enumerate(samples):
        input_ids[row, : len(sample["input_ids"])] = sample["input_ids"]
        labels[row, : len(sample["labels"])] = sample["labels"]
    return {"input_ids": input_ids, "labels": labels}


def per_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The mean cross-entropy over the tokens that are not padding."""
    return functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE)


class TokenLossTrainer(Trainer):
    """Returns each batch's loss with the number of tokens it is a mean over (``num_items_in_batch``)."""

    def calculate_train_batch_loss(self, batch):
        logits = self.model(batch["input_ids"])
        return {
            "loss": per_token_loss(logits, batch["labels"]),
            "model_outputs": logits,
            "batch_size": batch["input_ids"].size(0),
            "num_items_in_batch": (batch["labels"] != IGNORE).sum(),
        }

    calculate_eval_batch_loss = calculate_train_batch_loss


def reference_gradients(model: nn.Module, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """The gradients of the per-token mean loss of ``batch`` computed at once, with plain torch."""
    model.zero_grad()
    per_token_loss(model(batch["input_ids"]), batch["labels"]).backward()
    return [parameter.grad.detach().clone() for parameter in model.parameters()]
