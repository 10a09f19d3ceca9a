from __future__ import annotations

from pathlib import Path

import pytest
from helpers import write_template

from agentfactory.errors import InputError
from agentfactory.template import load_template
from pipelines.casetests import _stdin, load_cases


def cases(tmp_path: Path, text: str) -> list:
    folder = write_template(tmp_path, files={"src/main.c": "int main(void){return 0;}\n", "tests/cases.yaml": text})
    return load_cases(load_template(folder), "hello")


def test_stdin_text_and_bytes(tmp_path: Path) -> None:
    got = cases(tmp_path, "cases:\n  - {name: a, stdin: hi}\n  - {name: b, stdinBase64: /w==}\n")
    assert [_stdin(c) for c in got] == [b"hi", b"\xff"]


@pytest.mark.parametrize(("text", "message"), [
    ("cases:\n  - {name: a, stdin: x, stdinBase64: eA==}\n", "not both"),
    ("cases:\n  - {name: a, stdinBase64: '***'}\n", "hello/tests/cases.yaml:2: stdinBase64 is not valid base64"),
    ("cases:\n  - {name: a}\n  - {name: a}\n", "duplicate case names: a"),
    ("cases:\n  - {name: a, exitCode: 300}\n", "300 is greater than the maximum of 255"),
    ("cases: {}\n", "is not of type 'array'"),
])
def test_bad_cases_files(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(InputError, match=message.replace("(", r"\(")):
        cases(tmp_path, text)
