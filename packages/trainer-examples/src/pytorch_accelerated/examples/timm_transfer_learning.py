"""Transfer learning with a timm model: train a new head on a frozen backbone, then unfreeze and go on.

1. ``ModelFreezer(model).freeze()`` freezes every layer group but the last (timm's new classifier),
   and the optimizer gets only the trainable parameters;
2. after a first ``train()``, ``unfreeze(optimizer=optimizer)`` returns the newly trainable parameters
   as param groups, which join the optimizer at a smaller learning rate;
3. the second ``train()`` runs on the same Trainer. On several processes the Trainer notices that
   the trainable parameters changed and wraps the model for DDP again, so this works under
   ``torchrun`` / ``accelerate launch`` too.

Run::

    pip install "trainer-examples[timm]"
    # Imagenette + ImageNet weights (downloads)
    python -m pytorch_accelerated.examples.timm_transfer_learning --pretrained
    python -m pytorch_accelerated.examples.timm_transfer_learning --fake-data --image-size 64 --num-epochs 1 \
        --max-steps 3

Without ``--pretrained`` the model starts from random weights (no download): the mechanics are the
same, but transfer learning pays off only with pretrained weights. ``--fake-data`` replaces
Imagenette with ``torchvision.datasets.FakeData``.
"""

from __future__ import annotations

import os

import timm
import timm.data
from torch import nn, optim
from torchvision import datasets

from pytorch_accelerated.examples.cli import example_parser
from pytorch_accelerated.finetuning import ModelFreezer
from pytorch_accelerated.trainer import Trainer

NUM_CLASSES = 10  # Imagenette: ten ImageNet classes


def load_datasets(args, train_transform, eval_transform):
    if args.fake_data:
        image_size = (3, args.image_size or 160, args.image_size or 160)
        return (
            datasets.FakeData(args.fake_data_size, image_size, NUM_CLASSES, transform=train_transform),
            datasets.FakeData(
                args.fake_data_size // 4, image_size, NUM_CLASSES, transform=eval_transform, random_offset=1
            ),
        )
    return (
        datasets.Imagenette(
            args.data_dir, split="train", size="160px", download=True, transform=train_transform
        ),
        datasets.Imagenette(
            args.data_dir, split="val", size="160px", download=True, transform=eval_transform
        ),
    )


def main(argv=None):
    parser = example_parser(
        "timm_transfer_learning", __doc__, "--fake-data --image-size 64 --num-epochs 1 --max-steps 3"
    )
    parser.add_argument("--model-name", default="resnet18", help="any timm model name")
    parser.add_argument(
        "--pretrained", action="store_true", help="start from timm's pretrained weights (downloads them)"
    )
    parser.add_argument("--image-size", type=int, default=None, help="the images' side in pixels")
    parser.add_argument("--data-dir", default=os.getcwd(), help="where Imagenette is downloaded")
    parser.add_argument(
        "--fake-data", action="store_true", help="random images instead of Imagenette (no download)"
    )
    parser.add_argument("--fake-data-size", type=int, default=256, help="images, with --fake-data")
    parser.add_argument("--num-epochs", type=int, default=3, help="for each of the two stages")
    parser.add_argument("--max-steps", type=int, default=None, help="optimizer updates per stage, at most")
    parser.add_argument("--batch-size", type=int, default=32, help="per process")
    parser.add_argument("--lr", type=float, default=1e-3, help="the learning rate")
    args = parser.parse_args(argv)

    # A new classifier for our classes on top of the backbone; the model's preprocessing from timm.
    model = timm.create_model(args.model_name, pretrained=args.pretrained, num_classes=NUM_CLASSES)
    data_config = timm.data.resolve_model_data_config(model)
    if args.image_size:
        data_config["input_size"] = (3, args.image_size, args.image_size)
    train_dataset, eval_dataset = load_datasets(
        args,
        train_transform=timm.data.create_transform(**data_config, is_training=True),
        eval_transform=timm.data.create_transform(**data_config, is_training=False),
    )
    train_kwargs = dict(
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        num_epochs=args.num_epochs,
        max_num_train_steps=args.max_steps,
        per_device_batch_size=args.batch_size,
    )

    # Stage 1: only the new head learns (and the batch norms, which ModelFreezer leaves trainable).
    freezer = ModelFreezer(model)
    freezer.freeze()  # every layer group but the last
    optimizer = optim.AdamW(freezer.get_trainable_parameters(), lr=args.lr)
    trainer = Trainer(model, loss_func=nn.CrossEntropyLoss(), optimizer=optimizer)
    num_trainable = sum(param.numel() for param in freezer.get_trainable_parameters())
    trainer.print(
        f"stage 1: {num_trainable:,} of {sum(param.numel() for param in model.parameters()):,} parameters"
        " learn"
    )
    trainer.train(**train_kwargs)

    # Stage 2: the whole network learns, the backbone at a tenth of the head's learning rate.
    for param_group in freezer.unfreeze(optimizer=optimizer):
        optimizer.add_param_group({**param_group, "lr": args.lr / 10})
    num_trainable = sum(param.numel() for param in freezer.get_trainable_parameters())
    trainer.print(
        f"stage 2: {num_trainable:,} parameters learn, in {len(optimizer.param_groups)} param groups"
    )
    trainer.train(**train_kwargs)
    return trainer


if __name__ == "__main__":
    main()
