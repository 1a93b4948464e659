"""The README's Python examples run as written, each section's blocks in order in one namespace
(a later block of "Use the optimizers in your own JAX code" reuses the model of the first)."""

import re

import pytest

from gnbench.sweep.spec import REPO_ROOT

SECTIONS = {
    section.splitlines()[0]: re.findall(r"```python\n(.*?)```", section, re.S)
    for section in re.split(r"^## ", (REPO_ROOT / "README.md").read_text(), flags=re.M)[1:]
}
SECTIONS = {title: blocks for title, blocks in SECTIONS.items() if blocks}


def test_readme_has_python_examples():
    assert "Use the optimizers in your own JAX code" in SECTIONS
    assert len(SECTIONS["Use the optimizers in your own JAX code"]) >= 2


@pytest.mark.parametrize("title", list(SECTIONS))
def test_readme_examples_run(title):
    namespace = {"__name__": "readme"}
    for code in SECTIONS[title]:
        exec(compile(code, "README.md", "exec"), namespace)
