"""Every ```python snippet of README.md and docs/api.md runs, so the documented API cannot rot unseen.

A snippet right after a `<!-- snippet: slow -->` line (invisible in the rendered page) trains or
loads a model and carries the `slow` marker.
"""

import re
import tempfile

import pytest
from conftest import ROOT

DOCUMENTS = ("README.md", "docs/api.md")
SNIPPET = re.compile(r"^(<!-- snippet: slow -->\n)?```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def snippets() -> list:
    found = []
    for document in DOCUMENTS:
        text = (ROOT / document).read_text()
        for number, match in enumerate(SNIPPET.finditer(text), start=1):
            line = text[: match.start()].count("\n") + 1
            marks = [pytest.mark.slow] if match.group(1) else []
            found.append(pytest.param(match.group(2), id=f"{document}:{line}#{number}", marks=marks))
    return found


def test_the_documents_have_snippets():
    assert {p.id.split(":")[0] for p in snippets()} == set(DOCUMENTS)


@pytest.mark.parametrize("code", snippets())
def test_snippet_runs(code, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # what a snippet writes goes to tmp_path
    exec(compile(code, "<snippet>", "exec"), {"__name__": "__snippet__"})
