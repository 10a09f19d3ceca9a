from __future__ import annotations

import pytest

from agentfactory.errors import InputError
from agentfactory.yamlsafe import MAX_BYTES, load_yaml


def test_values_and_lines() -> None:
    doc = load_yaml(b"a: 1\nb:\n  - x\n  - {c: true}\n", "f.yaml")
    assert doc.data == {"a": 1, "b": ["x", {"c": True}]}
    assert doc.line_of(("b", 1, "c")) == 4
    assert doc.line_of(("b", 7)) == 2  # falls back to the nearest known ancestor


def test_syntax_error_names_line_and_column() -> None:
    with pytest.raises(InputError, match=r"^f\.yaml:3:\d+: YAML syntax error"):
        load_yaml(b"a: 1\nb: [1, 2\nc: 3\n", "f.yaml")


def test_alias_bomb_is_refused() -> None:
    bomb = b"a: &a [x,x,x,x,x,x,x,x,x,x]\n"
    prev = "a"
    for name in "bcdefgh":
        bomb += f"{name}: &{name} [{', '.join(['*' + prev] * 10)}]\n".encode()
        prev = name
    with pytest.raises(InputError, match="alias bomb"):
        load_yaml(bomb, "bomb.yaml")


def test_small_aliases_still_work() -> None:
    assert load_yaml(b"a: &x [1, 2]\nb: *x\n", "f.yaml").data == {"a": [1, 2], "b": [1, 2]}


def test_deep_nesting_is_refused() -> None:
    with pytest.raises(InputError, match="nesting deeper"):
        load_yaml(b"a: " + b"[" * 100 + b"]" * 100 + b"\n", "deep.yaml")


@pytest.mark.parametrize(("text", "message"), [
    (b"a: 1\na: 2\n", "f.yaml:2: duplicate key 'a'"),
    (b"<<: {a: 1}\n", "merge keys"),
    (b"? [1]\n: x\n", "must be a string"),
    (b"a: 1\n---\nb: 2\n", "exactly one YAML document"),
    (b"\xff\xfe", "not UTF-8"),
    (b"a: !!python/object:os.system x\n", "could not determine a constructor"),
])
def test_bad_documents(text: bytes, message: str) -> None:
    with pytest.raises(InputError, match=message.replace("[", r"\[").replace("(", r"\(")):
        load_yaml(text, "f.yaml")


def test_size_limit() -> None:
    with pytest.raises(InputError, match="limit"):
        load_yaml(b"a: " + b"x" * MAX_BYTES + b"\n", "big.yaml")
