"""Mixed precision and torch.compile, switched on without changing the training code.

The model, the data, the loss and the ``trainer.train(...)`` call are the ones you would write for
plain fp32 training. Two lines change:

* ``torch.compile(model)`` before handing the model to the Trainer;
* ``Trainer(..., accelerator_kwargs={"mixed_precision": "bf16"})``: accelerate runs the forward pass
  under autocast. bf16 works on CPUs and recent GPUs; ``"fp16"`` (with loss scaling) needs a GPU.

Run::

    python -m pytorch_accelerated.examples.mixed_precision_and_compile
    python -m pytorch_accelerated.examples.mixed_precision_and_compile --mixed-precision no \
        --compile-backend none

The default compile backend, ``inductor``, generates and compiles code (a C++ compiler on a CPU), which
takes a while the first time; ``--compile-backend eager`` traces the model without generating code
(quick: what the tests use), ``none`` leaves the model uncompiled.
"""

from __future__ import annotations


import torch
from torch import nn, optim
from torch.utils.data import TensorDataset

from pytorch_accelerated.examples.cli import example_parser
from pytorch_accelerated.trainer import Trainer, seed_everything


def make_dataset(num_samples: int, seed: int) -> TensorDataset:
    """Two noisy blobs of 3x32x32 images, one per class."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (num_samples,), generator=generator)
    images = torch.randn(num_samples, 3, 32, 32, generator=generator) + labels.view(-1, 1, 1, 1)
    return TensorDataset(images, labels)


def make_model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 16, kernel_size=3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 2),
    )


def main(argv=None):
    parser = example_parser(
        "mixed_precision_and_compile",
        __doc__,
        "--compile-backend eager --num-samples 256 --num-epochs 1 --max-steps 3",
    )
    parser.add_argument(
        "--mixed-precision", default="bf16", choices=["no", "bf16", "fp16"], help="fp16 needs a GPU"
    )
    parser.add_argument("--compile-backend", default="inductor", help="a torch.compile backend, or 'none'")
    parser.add_argument("--num-epochs", type=int, default=3, help="epochs to train")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer updates")
    parser.add_argument("--num-samples", type=int, default=2048, help="synthetic training samples")
    parser.add_argument("--batch-size", type=int, default=64, help="per process")
    args = parser.parse_args(argv)

    seed_everything(0)
    model = make_model()
    optimizer = optim.AdamW(model.parameters(), lr=1e-2)

    if args.compile_backend != "none":
        model = torch.compile(model, backend=args.compile_backend)  # <- change 1
    trainer = Trainer(
        model,
        loss_func=nn.CrossEntropyLoss(),
        optimizer=optimizer,
        accelerator_kwargs={"mixed_precision": args.mixed_precision},  # <- change 2
    )

    # The training code itself is the same as for fp32 training of an uncompiled model.
    trainer.train(
        train_dataset=make_dataset(args.num_samples, seed=1),
        eval_dataset=make_dataset(args.num_samples // 4, seed=2),
        num_epochs=args.num_epochs,
        max_num_train_steps=args.max_steps,
        per_device_batch_size=args.batch_size,
    )
    trainer.print(
        f"mixed precision: {trainer.run_config.mixed_precision}, compiled: {args.compile_backend != 'none'}"
    )
    return trainer


if __name__ == "__main__":
    main()
