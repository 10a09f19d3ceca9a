"""The one boundary every policy input crosses, whatever the plane (template, artifact, admission).

`PolicyEngine.decide` calls `check_input` before any engine sees the document, so the pipeline,
the verifier, the webhook and the runtime get it without doing anything. It validates and never
rewrites: a policy must judge exactly the bytes the plane will use. A rewritten copy could judge
something else than what runs (NFC turns "MY_SECRET" + U+0307 into "MY_SECREṪ", which the secret
pattern no longer matches; cutting a string can cut off what a deny rule looks for; rego-cpp cuts a
string at NUL). So anything the policy engine could misread is refused, with the reason and the
place, and the decision denies. Refusing can only make a decision stricter, never more permissive.

What is refused, and why:
- a value that is not plain JSON (sets, bytes, objects, a key that is not a string): JSON and Rego
  disagree on them;
- a string that is not valid Unicode (a lone surrogate) or holds NUL (rego-cpp takes C strings and
  would silently judge the part before the NUL);
- NaN, ±Infinity and integers outside the 64-bit range (rego-cpp would wrap or reject them, and
  NaN compares false with every ceiling);
- more than MAX_STRING_BYTES in one string, MAX_STRINGS strings (keys included), MAX_INPUT_DEPTH
  levels of nesting or about MAX_INPUT_BYTES of JSON in all: bounded work per decision.

Quotes, backslashes, newlines, U+2028 and text that looks like JSON or Rego are valid and pass: the
engine reads decisions as typed values (agentfactory/policy.py), so no string can rewrite one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from .errors import AgentFactoryError

MAX_INPUT_BYTES = 4 * 1024 * 1024
MAX_INPUT_DEPTH = 64
MAX_STRING_BYTES = 64 * 1024
MAX_STRINGS = 200_000
INT_MIN, INT_MAX = -(2**63), 2**63 - 1


class PolicyInputError(AgentFactoryError):
    """A policy input the engine must not judge; the message names the field and what is wrong."""


def check_input(document: Any) -> None:
    """Raise PolicyInputError when `document` is not a plain, bounded JSON object (see the module)."""
    if not isinstance(document, dict):
        raise PolicyInputError(f"input: must be a JSON object, not {type(document).__name__}")
    _Walk().value(document, (), 1)


def _where(path: tuple[Any, ...]) -> str:
    out = "input"
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{_short(part)}"
    return out


def _short(text: str) -> str:
    """A key or string as it may appear in a message: bounded, and printed escaped (repr)."""
    return repr(text[:60] + ("…" if len(text) > 60 else ""))[1:-1]


class _Walk:
    """One pass over the document: counts, sizes and checks every scalar; stops at the first problem."""

    def __init__(self) -> None:
        self.strings = 0
        self.size = 0

    def fail(self, path: tuple[Any, ...], problem: str) -> PolicyInputError:
        return PolicyInputError(f"{_where(path)}: {problem}; the policy input is refused (nothing was judged)")

    def string(self, text: str, path: tuple[Any, ...]) -> None:
        self.strings += 1
        if self.strings > MAX_STRINGS:
            raise self.fail(path, f"the input holds more than {MAX_STRINGS} strings")
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError as exc:
            raise self.fail(path, f"not valid Unicode (a lone surrogate at character {exc.start})") from None
        if size > MAX_STRING_BYTES:
            raise self.fail(path, f"a string of {size} bytes; the limit is {MAX_STRING_BYTES}")
        if "\x00" in text:
            raise self.fail(path, f"holds a NUL character (at {text.index(chr(0))}), which the policy engine "
                                  "cannot read")
        self.size += size + 3
        if self.size > MAX_INPUT_BYTES:
            raise self.fail(path, f"the input is more than {MAX_INPUT_BYTES} bytes of JSON; the limit is "
                                  f"{MAX_INPUT_BYTES}")

    def value(self, value: Any, path: tuple[Any, ...], depth: int) -> None:
        if depth > MAX_INPUT_DEPTH:
            raise self.fail(path, f"the input nests deeper than {MAX_INPUT_DEPTH} levels")
        check = _SCALARS.get(type(value))
        if check is not None:
            check(self, value, path)
            return
        if isinstance(value, dict):
            self.size += 2
            for key, item in value.items():
                if not isinstance(key, str):
                    raise self.fail(path, f"a key of type {type(key).__name__} ({key!r:.60}); keys must be strings")
                self.string(key, path)
                self.value(item, (*path, key), depth + 1)
        elif isinstance(value, (list, tuple)):
            self.size += 2
            for i, item in enumerate(value):
                self.value(item, (*path, i), depth + 1)
        elif isinstance(value, bool) or value is None:
            self.size += 5
        elif isinstance(value, str):
            self.string(value, path)
        elif isinstance(value, int):
            _int(self, value, path)
        elif isinstance(value, float):
            _float(self, value, path)
        else:
            raise self.fail(path, f"a value of type {type(value).__name__}, which is not JSON")


def _str(walk: _Walk, value: Any, path: tuple[Any, ...]) -> None:
    walk.string(value, path)


def _int(walk: _Walk, value: Any, path: tuple[Any, ...]) -> None:
    if not INT_MIN <= value <= INT_MAX:
        raise walk.fail(path, f"the integer {str(value)[:60]} is outside the 64-bit range the policy engine reads")
    walk.size += 20


def _float(walk: _Walk, value: Any, path: tuple[Any, ...]) -> None:
    if not math.isfinite(value):
        raise walk.fail(path, f"{value} is not a JSON number")
    walk.size += 24


def _plain(walk: _Walk, value: Any, path: tuple[Any, ...]) -> None:
    walk.size += 5


# The exact built-in types, looked up first (the common case); subclasses take the isinstance path.
_SCALARS: dict[type, Callable[[_Walk, Any, tuple[Any, ...]], None]] = {
    str: _str, int: _int, float: _float, bool: _plain, type(None): _plain}
