"""pytorch_accelerated.examples: runnable examples of the Trainer and its plug-in packages.

Each example is a module with a ``main(argv=None)`` function; run it with
``python -m pytorch_accelerated.examples.<name> [--help]``. Every one takes small sizes
(``--num-epochs 1 --max-steps 5`` or similar) for a run of a few seconds: its ``--help`` prints them.

Offline, on the handwritten digits that ship inside scikit-learn (``digits``: the data, the seed's
MLP and the learning-rate schedule that these share):

- ``quickstart``: the main command: progress bar, accuracy, early stopping, best checkpoint, CSV log
  and plots, all in one run folder; above 90% test accuracy in well under a minute on two CPU cores.
- ``metrics_in_callback``: torchmetrics recorded per epoch by trainer-metrics' ``MetricsCallback``.
- ``metrics_in_trainer_subclass``: the same metrics updated in an overridden hook, recorded with
  ``record_metrics``.
- ``custom_event``: a custom callback event fired from an overridden hook, and a callback that
  listens to it.
- ``accumulation_clipping_scheduler``: gradient accumulation, clipping, and a cosine schedule with
  warmup sized by ``TrainerPlaceholderValues``.
- ``training_tools``: model summary, gradient norms before and after clipping, a ``ReduceLROnPlateau``
  schedule, stochastic weight averaging and a profiled window of steps, in one run.
- ``tuning_tools``: the learning-rate finder (trainer-tuning), then a run at its suggestion; the
  batch-size finder on a GPU (``pip install "trainer-examples[tuning]"``).
- ``optuna_search``: an Optuna study, trials pruned on the validation loss (``[tuning]``).
- ``resumable``: stop it at any time (Ctrl-C, SIGTERM, a crash) and run the same command again: it
  continues exactly where it stopped, from the training states it saves.
- ``tensorboard_and_checkpoints``: several evaluation sets, images and histograms on TensorBoard, the
  3 best checkpoints (and ``model.safetensors``), and a time limit that saves and stops, in one run.

On synthetic data, with trainer-core alone:

- ``mixed_precision_and_compile``: mixed precision and ``torch.compile`` without changing the
  training code.
- ``distributed_cpu``: the same script on two CPU processes (torchrun, accelerate launch,
  notebook_launcher).

With optional dependencies (``pip install "trainer-examples[vision]"``, ``[timm]``,
``[transformers]``), each with a no-download mode for quick runs:

- ``mnist_quickstart``: the seed README's MNIST example (torchvision; downloads MNIST).
- ``timm_transfer_learning``: a timm model, its backbone frozen first, then unfrozen.
- ``transformers_classifier``: a transformers model, whose loss comes from its own outputs.

``python -m pytorch_accelerated.examples [--help]`` prints this list; ``cli`` holds the command
line the examples share.
"""

__all__: list[str] = []
