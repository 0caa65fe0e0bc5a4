"""``python -m pytorch_accelerated.examples [--help]`` prints the list of examples."""

import argparse

import pytorch_accelerated.examples


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m pytorch_accelerated.examples",
        description=pytorch_accelerated.examples.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.parse_args()
    print(pytorch_accelerated.examples.__doc__)


if __name__ == "__main__":
    main()
