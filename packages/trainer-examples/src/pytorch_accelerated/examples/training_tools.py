"""The training tools of trainer-callbacks in one run: model summary, gradient norms, a plateau
schedule, stochastic weight averaging and a profiled window of steps.

    python -m pytorch_accelerated.examples.training_tools --num-epochs 12 --profile-dir runs/profile

- ``ModelSummaryCallback`` prints the parameters per module when the run starts;
- ``GradientNormCallback`` records the gradient norm of every update before clipping
  (``grad_norm``, through ``GradientClippingEventMixin``) and after (``grad_norm_clipped``);
- ``MetricSchedulerCallback`` halves the lr when ``eval_loss_epoch`` stops improving
  (``ReduceLROnPlateau``, which ``create_scheduler_fn`` cannot step);
- ``StochasticWeightAveragingCallback`` averages the weights of the last epochs and ends the run
  with the average;
- ``ProfilerCallback`` (with ``--profile-dir``) traces steps 5 to 7 for TensorBoard or Perfetto.
"""

from __future__ import annotations

import functools

from torch import nn, optim
from torch.optim.lr_scheduler import ReduceLROnPlateau

from pytorch_accelerated.callbacks import (
    DEFAULT_CALLBACKS,
    GradientClippingEventMixin,
    GradientNormCallback,
    MetricSchedulerCallback,
    ModelSummaryCallback,
    ProfilerCallback,
    StochasticWeightAveragingCallback,
)
from pytorch_accelerated.examples.cli import example_parser
from pytorch_accelerated.examples.digits import DigitsMLP, load_digits_datasets
from pytorch_accelerated.trainer import Trainer, seed_everything


class DigitsTrainer(GradientClippingEventMixin, Trainer):
    """Fires ``on_before_gradient_clipping``, where ``GradientNormCallback`` reads the norms before
    clipping."""


def main(argv=None) -> dict:
    """Train; returns the trainer and the gradient norms before and after clipping."""
    parser = example_parser("training_tools", __doc__, "--num-epochs 1 --max-steps 5")
    parser.add_argument("--num-epochs", type=int, default=12, help="epochs to train")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer updates")
    parser.add_argument("--lr", type=float, default=3e-3, help="AdamW's learning rate")
    parser.add_argument("--profile-dir", default=None, help="write a profiler trace of steps 5-7 here")
    parser.add_argument("--seed", type=int, default=42, help="the random seed")
    args = parser.parse_args(argv)

    seed_everything(args.seed)
    train_dataset, eval_dataset, _ = load_digits_datasets()
    model = DigitsMLP()
    callbacks = [
        *DEFAULT_CALLBACKS,
        ModelSummaryCallback(),
        GradientNormCallback(log_every_n_steps=20),
        MetricSchedulerCallback(
            functools.partial(ReduceLROnPlateau, factor=0.5, patience=1), monitor="eval_loss_epoch"
        ),
        # average the last quarter of the epochs, under the plateau schedule (no swa_lr)
        StochasticWeightAveragingCallback(swa_start_epoch=max(1, args.num_epochs - args.num_epochs // 4)),
    ]
    if args.profile_dir:
        callbacks.append(ProfilerCallback(args.profile_dir, start_step=5, end_step=7))
    trainer = DigitsTrainer(
        model,
        loss_func=nn.CrossEntropyLoss(),
        optimizer=optim.AdamW(model.parameters(), lr=args.lr),
        callbacks=callbacks,
    )
    trainer.train(
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        num_epochs=args.num_epochs,
        per_device_batch_size=32,
        gradient_clip_norm=1.0,
        max_num_train_steps=args.max_steps,
    )
    history = trainer.run_history
    norms = history.get_metric_values("grad_norm")
    clipped = sum(norm > 1.0 for norm in norms)
    trainer.print(
        f"{len(norms)} updates, {clipped} clipped (gradient norm above 1.0); final lr"
        f" {trainer.optimizer.param_groups[0]['lr']:.2e}"
    )
    trainer.print(f"with the averaged weights: {trainer.evaluate()}")
    return {
        "trainer": trainer,
        "grad_norms": norms,
        "grad_norms_clipped": history.get_metric_values("grad_norm_clipped"),
    }


if __name__ == "__main__":
    main()
