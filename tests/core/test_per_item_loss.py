"""The loss per token: a batch that says how many items (tokens) its loss is a mean over
(``num_items_in_batch``) makes each update's gradient that of the global batch's per-token mean loss,
whatever the padding, the gradient accumulation and the number of processes (two processes:
``test_distributed.py::test_per_token_loss_on_two_processes_gives_the_gradients_of_one``)."""

from __future__ import annotations

import pytest
import torch

from pytorch_accelerated.trainer import TrainerCallback

from .test_step_cost import ALLOWED_READERS, ledger  # noqa: F401  (the fixture)
from .tiny_lm import (
    TinyCausalLM,
    TokenLossTrainer,
    TokenSequences,
    pad_batch,
    per_token_loss,
    reference_gradients,
)


class FirstUpdateGradients(TrainerCallback):
    """The gradients the first update applies (after the loop's scaling, before the optimizer)."""

    gradients: list[torch.Tensor] | None = None

    def on_before_optimizer_step(self, trainer, optimizer, **kwargs):
        if self.gradients is None:
            self.gradients = [
                parameter.grad.detach().clone() for parameter in trainer.get_model().parameters()
            ]


def train_tiny_lm(
    batch_size: int, accumulation: int, num_samples: int = 16, lr: float = 0.1, callbacks=(), **train
):
    model = TinyCausalLM()
    trainer = TokenLossTrainer(
        model, loss_func=None, optimizer=torch.optim.SGD(model.parameters(), lr=lr), callbacks=callbacks
    )
    trainer.train(
        TokenSequences(num_samples),
        num_epochs=1,
        per_device_batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        collate_fn=pad_batch,
        train_dataloader_kwargs={"shuffle": False},
        **train,
    )
    return trainer


def first_samples(num_samples: int) -> dict[str, torch.Tensor]:
    dataset = TokenSequences(16)
    return pad_batch([dataset[index] for index in range(num_samples)])


def test_four_accumulated_batches_of_two_give_a_batch_of_eight_s_gradients():
    accumulated, whole = FirstUpdateGradients(), FirstUpdateGradients()
    train_tiny_lm(batch_size=2, accumulation=4, callbacks=[accumulated])
    train_tiny_lm(batch_size=8, accumulation=1, callbacks=[whole])
    expected = reference_gradients(TinyCausalLM(), first_samples(8))
    token_counts = [int((first_samples(8)["labels"][2 * i : 2 * i + 2] != -100).sum()) for i in range(4)]
    assert len(set(token_counts)) > 1, f"the batches must hold different numbers of tokens: {token_counts}"
    for name, gradients in (("4 x 2, accumulated", accumulated.gradients), ("8 at once", whole.gradients)):
        for got, want in zip(gradients, expected):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7, msg=lambda m: f"{name}: {m}")


def test_a_window_cut_short_by_the_epoch_end_is_a_mean_over_its_tokens():
    # 10 samples in batches of 2, windows of 4: the second window holds one batch
    class EveryUpdate(TrainerCallback):
        gradients: list = []

        def on_before_optimizer_step(self, trainer, optimizer, **kwargs):
            self.gradients.append(
                [parameter.grad.detach().clone() for parameter in trainer.get_model().parameters()]
            )

    watcher = EveryUpdate()
    train_tiny_lm(batch_size=2, accumulation=4, num_samples=10, lr=0.0, callbacks=[watcher])
    dataset = TokenSequences(10)
    expected = reference_gradients(TinyCausalLM(), pad_batch([dataset[8], dataset[9]]))
    for got, want in zip(watcher.gradients[1], expected):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


def test_the_logged_losses_are_means_over_every_token():
    dataset, eval_dataset = TokenSequences(16), TokenSequences(6, seed=1)
    # lr 0: the weights stay
    trainer = train_tiny_lm(batch_size=2, accumulation=4, lr=0.0, eval_dataset=eval_dataset)
    model = TinyCausalLM()
    with torch.no_grad():
        for name, data in (("train_loss_epoch", dataset), ("eval_loss_epoch", eval_dataset)):
            batch = pad_batch([data[index] for index in range(len(data))])
            expected = per_token_loss(model(batch["input_ids"]), batch["labels"]).item()
            assert trainer.run_history.get_latest_metric(name) == pytest.approx(expected, rel=1e-5), name


def test_items_for_some_batches_of_a_window_only_is_an_error():
    class SometimesCounted(TokenLossTrainer):
        def calculate_train_batch_loss(self, batch):
            output = super().calculate_train_batch_loss(batch)
            if self.completed_epoch_batches == 1:
                del output["num_items_in_batch"]
            return output

    model = TinyCausalLM()
    trainer = SometimesCounted(model, None, torch.optim.SGD(model.parameters(), lr=0.1), callbacks=())
    with pytest.raises(ValueError, match="num_items_in_batch"):
        trainer.train(
            TokenSequences(8),
            num_epochs=1,
            per_device_batch_size=2,
            gradient_accumulation_steps=2,
            collate_fn=pad_batch,
        )


def test_a_per_token_step_reads_nothing_on_the_host(ledger):  # noqa: F811
    train_tiny_lm(batch_size=2, accumulation=2, num_samples=32)
    # the dataset's padding reads lengths (outside the trainer); the epoch's fetch seed is read once an epoch
    allowed = {*ALLOWED_READERS, "<outside the trainer>", "epoch_seed"}
    unexpected = {what: n for what, n in ledger.reads.items() if what.split(" in ")[1] not in allowed}
    assert unexpected == {}, f"host reads besides the allowed ones: {unexpected}"
    assert ledger.collectives == {}  # one process: the item count is not reduced
