"""The README's quickstart is the code that examples/quickstart.py runs (and times)."""

from __future__ import annotations

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _code(text: str) -> list[str]:
    """Lines of code, without comments, noqa marks and blank lines."""
    lines = [re.sub(r"\s*#.*$", "", line).rstrip() for line in text.splitlines()]
    return [line for line in lines if line.strip()]


def test_readme_quickstart_is_the_example_that_is_timed() -> None:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Quickstart.*?```python\n(.*?)```", readme, re.S)
    assert block is not None, "README has no quickstart code block"
    script = (ROOT / "examples" / "quickstart.py").read_text()
    body = re.search(r"# --- README quickstart\n(.*?)# --- end", script, re.S)
    assert body is not None
    assert _code(block.group(1)) == _code(body.group(1))
