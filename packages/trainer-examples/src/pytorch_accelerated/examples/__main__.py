"""``python -m pytorch_accelerated.examples`` prints the list of examples."""

import pytorch_accelerated.examples

print(pytorch_accelerated.examples.__doc__)
