"""Training on two CPU processes: the same script under torchrun, accelerate launch or notebook_launcher.

Nothing in the training code knows how many processes there are. Launched on several processes on
a machine without a GPU, the Trainer trains on the CPUs and the processes talk through gloo; each
process gets its share of the data and DDP averages the gradients, so every process ends with the
same weights. Run it any of these ways::

    # one process
    python -m pytorch_accelerated.examples.distributed_cpu

    # two processes with torch's launcher
    torchrun --nproc_per_node 2 -m pytorch_accelerated.examples.distributed_cpu

    # two processes with accelerate's launcher. `--multi_gpu` is what makes it start two processes
    # (through torch's launcher); on a machine without a GPU they train on the CPUs with gloo.
    # (`accelerate launch --cpu --num_processes 2` starts only ONE process: with --cpu, several
    # processes need MPI and --mpirun_hostfile.)
    accelerate launch --multi_gpu --num_processes 2 -m pytorch_accelerated.examples.distributed_cpu

    # two processes started from Python, as in a notebook (the function builds the Trainer itself:
    # nothing may create an Accelerator in the launching process)
    python -m pytorch_accelerated.examples.distributed_cpu --notebook-launcher --num-processes 2
"""

from __future__ import annotations


import torch
from torch import nn, optim
from torch.utils.data import TensorDataset

from pytorch_accelerated.examples.cli import example_parser
from pytorch_accelerated.trainer import Trainer, seed_everything


def make_dataset(num_samples: int, seed: int) -> TensorDataset:
    """Points in 8 dimensions, labelled by which side of a fixed plane they lie on."""
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(num_samples, 8, generator=generator)
    labels = (inputs.sum(dim=1) > 0).long()
    return TensorDataset(inputs, labels)


def train(num_epochs: int = 2, max_steps: int | None = None, num_samples: int = 1024) -> float:
    """The training code: the same on one process or many. Returns the last evaluation loss
    (notebook_launcher sends a return value back to the launching process, so it must pickle)."""
    seed_everything(0)  # the same initial weights on every process
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 2))
    trainer = Trainer(model, loss_func=nn.CrossEntropyLoss(), optimizer=optim.SGD(model.parameters(), lr=0.1))
    trainer.train(
        train_dataset=make_dataset(num_samples, seed=1),
        eval_dataset=make_dataset(num_samples // 4, seed=2),
        num_epochs=num_epochs,
        max_num_train_steps=max_steps,
        per_device_batch_size=32,  # per process: one update uses 32 * num_processes samples
    )

    # Every process holds the same weights: check by gathering a checksum from each.
    checksum = sum(param.detach().double().sum() for param in trainer.get_model().parameters())
    checksums = trainer.gather(checksum.reshape(1).float())
    backend = torch.distributed.get_backend() if torch.distributed.is_initialized() else "none"
    trainer.print(
        f"trained on {trainer.num_processes} process(es), device {trainer.device.type}, backend {backend}; "
        f"weights identical on every process: {bool((checksums == checksums[0]).all())}"
    )
    return trainer.run_history.get_latest_metric("eval_loss_epoch")


def main(argv=None):
    parser = example_parser("distributed_cpu", __doc__, "--num-samples 256 --num-epochs 1 --max-steps 3")
    parser.add_argument("--num-epochs", type=int, default=2, help="epochs to train")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer updates")
    parser.add_argument("--num-samples", type=int, default=1024, help="synthetic training samples")
    parser.add_argument(
        "--notebook-launcher",
        action="store_true",
        help="start the processes with accelerate.notebook_launcher",
    )
    parser.add_argument("--num-processes", type=int, default=2, help="with --notebook-launcher")
    parser.add_argument(
        "--port", default="29500", help="with --notebook-launcher: the port the processes meet on"
    )
    args = parser.parse_args(argv)

    if args.notebook_launcher:
        from accelerate import notebook_launcher

        notebook_launcher(
            train,
            args=(args.num_epochs, args.max_steps, args.num_samples),
            num_processes=args.num_processes,
            use_port=args.port,
        )
        return None
    return train(args.num_epochs, args.max_steps, args.num_samples)


if __name__ == "__main__":
    main()
