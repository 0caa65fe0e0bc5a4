"""A HuggingFace transformers sequence classifier: the loss comes from the model, batches from a collate_fn.

* ``Trainer(model, loss_func=None, ...)``: a transformers model computes its own loss when the batch
  holds ``labels``, and the Trainer takes ``outputs.loss``;
* ``train(..., collate_fn=...)``: the collate function tokenizes a list of ``(text, label)`` samples
  into one padded batch, a dict that the Trainer passes on as ``model(**batch)``.

Everything is built offline: a small DistilBERT from a config (random weights) and a word-level
tokenizer over the words of a synthetic review data set. With a hub connection you would write
``AutoTokenizer.from_pretrained(name)`` and ``AutoModelForSequenceClassification.from_pretrained(name,
num_labels=2)`` instead; the rest stays the same. Run::

    pip install "trainer-examples[transformers]"
    python -m pytorch_accelerated.examples.transformers_classifier
    python -m pytorch_accelerated.examples.transformers_classifier --num-epochs 1 --max-steps 3
"""

from __future__ import annotations

import functools
import random

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from torch import optim
from transformers import AutoModelForSequenceClassification, DistilBertConfig, PreTrainedTokenizerFast

from pytorch_accelerated.examples.cli import example_parser
from pytorch_accelerated.trainer import Trainer, seed_everything

POSITIVE = ["great", "wonderful", "moving", "brilliant", "funny", "charming"]
NEGATIVE = ["boring", "awful", "dull", "clumsy", "tedious", "bland"]
FILLER = ["the", "film", "was", "really", "and", "a", "bit", "story", "acting", "quite", "overall"]


def make_reviews(num_samples: int, seed: int) -> list[tuple[str, int]]:
    """Short reviews: filler words around one positive (label 1) or negative (label 0) word."""
    rng = random.Random(seed)
    reviews = []
    for _ in range(num_samples):
        label = rng.randint(0, 1)
        words = rng.choices(FILLER, k=rng.randint(3, 10))
        words.insert(rng.randint(0, len(words)), rng.choice(POSITIVE if label else NEGATIVE))
        reviews.append((" ".join(words), label))
    return reviews


def make_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer over our words, standing in for a pretrained one."""
    vocab = {word: index for index, word in enumerate(["[PAD]", "[UNK]", *FILLER, *POSITIVE, *NEGATIVE])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]")


def collate(samples: list[tuple[str, int]], tokenizer) -> dict[str, torch.Tensor]:
    """A list of (text, label) samples -> {"input_ids", "attention_mask", "labels"}, padded to the longest."""
    texts, labels = zip(*samples)
    batch = tokenizer(list(texts), padding=True, truncation=True, max_length=64, return_tensors="pt")
    return {**batch, "labels": torch.tensor(labels)}


def main(argv=None):
    parser = example_parser(
        "transformers_classifier", __doc__, "--num-samples 64 --num-epochs 1 --max-steps 3"
    )
    parser.add_argument("--num-epochs", type=int, default=3, help="epochs to train")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer updates")
    parser.add_argument("--num-samples", type=int, default=2000, help="synthetic reviews to train on")
    parser.add_argument("--batch-size", type=int, default=32, help="per process")
    args = parser.parse_args(argv)

    seed_everything(0)
    tokenizer = make_tokenizer()
    config = DistilBertConfig(
        vocab_size=tokenizer.vocab_size,
        dim=64,
        hidden_dim=128,
        n_layers=2,
        n_heads=2,
        max_position_embeddings=64,
        num_labels=2,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = AutoModelForSequenceClassification.from_config(config)
    train_dataset, eval_dataset = (
        make_reviews(args.num_samples, seed=1),
        make_reviews(args.num_samples // 4, seed=2),
    )
    collate_fn = functools.partial(collate, tokenizer=tokenizer)

    trainer = Trainer(model, loss_func=None, optimizer=optim.AdamW(model.parameters(), lr=1e-3))
    trainer.train(
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        num_epochs=args.num_epochs,
        max_num_train_steps=args.max_steps,
        per_device_batch_size=args.batch_size,
        collate_fn=collate_fn,
    )

    logits = trainer.predict(eval_dataset, per_device_batch_size=64, collate_fn=collate_fn)["logits"]
    accuracy = (
        (logits.argmax(dim=-1) == torch.tensor([label for _, label in eval_dataset])).float().mean().item()
    )
    trainer.print(f"eval accuracy: {accuracy:.3f}")
    return accuracy


if __name__ == "__main__":
    main()
