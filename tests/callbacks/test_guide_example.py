"""The callback-author guide in packages/trainer-callbacks/README.md works as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "packages" / "trainer-callbacks" / "README.md"


def test_the_ten_line_callback_and_its_test_from_the_readme_run(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    callback_code = next(block for block in blocks if "class PrintLossEvery" in block)
    test_code = next(block for block in blocks if "def test_prints_every_two_updates" in block)
    namespace = {}
    exec(callback_code, namespace)
    exec(test_code, namespace)
    namespace["test_prints_every_two_updates"](capsys)
