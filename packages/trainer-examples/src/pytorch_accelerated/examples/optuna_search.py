"""A hyperparameter search with Optuna, trials pruned on the validation loss.

    python -m pytorch_accelerated.examples.optuna_search --num-trials 12

Each trial trains the digits MLP with its own Trainer (several trials in one process, one after the
other) at a learning rate and weight decay that Optuna suggests. ``OptunaPruningCallback`` (from
trainer-tuning; ``pip install "trainer-examples[tuning]"``) reports ``eval_loss_epoch`` after every
epoch; when the median pruner finds a trial worse than the median of earlier trials at the same epoch,
the run ends cleanly and Optuna records the trial as pruned.
"""

from __future__ import annotations


from torch import nn, optim

from pytorch_accelerated.callbacks import DEFAULT_CALLBACKS
from pytorch_accelerated.examples.cli import example_parser
from pytorch_accelerated.examples.digits import DigitsMLP, load_digits_datasets
from pytorch_accelerated.trainer import Trainer, seed_everything
from pytorch_accelerated.tuning import OptunaPruningCallback


def main(argv=None) -> dict:
    """Run the study; returns it."""
    import optuna

    parser = example_parser("optuna_search", __doc__, "--num-trials 2 --num-epochs 1 --max-steps 5")
    parser.add_argument("--num-trials", type=int, default=12, help="trials of the study")
    parser.add_argument("--num-epochs", type=int, default=8, help="epochs per trial at most")
    parser.add_argument("--max-steps", type=int, default=None, help="optimizer updates per trial at most")
    parser.add_argument("--seed", type=int, default=42, help="the random seed")
    args = parser.parse_args(argv)
    train_dataset, eval_dataset, _ = load_digits_datasets()

    def objective(trial: optuna.Trial) -> float:
        seed_everything(args.seed)
        model = DigitsMLP()
        optimizer = optim.AdamW(
            model.parameters(),
            lr=trial.suggest_float("lr", 1e-4, 3e-1, log=True),
            weight_decay=trial.suggest_float("weight_decay", 1e-6, 1e-1, log=True),
        )
        trainer = Trainer(
            model,
            nn.CrossEntropyLoss(),
            optimizer,
            callbacks=(*DEFAULT_CALLBACKS, OptunaPruningCallback(trial, monitor="eval_loss_epoch")),
        )
        trainer.train(
            train_dataset,
            eval_dataset=eval_dataset,
            num_epochs=args.num_epochs,
            per_device_batch_size=32,
            max_num_train_steps=args.max_steps,
        )
        return trainer.run_history.get_latest_metric("eval_loss_epoch")

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=args.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1),
    )
    study.optimize(objective, n_trials=args.num_trials)
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    print(
        f"{len(study.trials)} trials, {len(pruned)} pruned; best eval_loss_epoch {study.best_value:.4f} with"
        f" {study.best_params}"
    )
    return {"study": study}


if __name__ == "__main__":
    main()
