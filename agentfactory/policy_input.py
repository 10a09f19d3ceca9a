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

import datetime
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import AgentFactoryError

MAX_INPUT_BYTES = 4 * 1024 * 1024
MAX_INPUT_DEPTH = 64
MAX_STRING_BYTES = 64 * 1024
MAX_STRINGS = 200_000
INT_MIN, INT_MAX = -(2**63), 2**63 - 1


class PolicyInputError(AgentFactoryError):
    """A policy input the engine must not judge; the message names the field and what is wrong."""


@dataclass(frozen=True)
class CheckedInput:
    """What the one walk of check_input learnt beside the verdict, so that no engine walks the input again.

    `maybe_quoted`: some string or key starts and ends with `"` (it may be a JSON string literal, which
    rego-cpp misreads: agentfactory/policy.py quoted_string says exactly which, and only then walks)."""

    strings: int
    size: int
    maybe_quoted: bool


def check_input(document: Any) -> CheckedInput:
    """Raise PolicyInputError when `document` is not a plain, bounded JSON object (see the module)."""
    if not isinstance(document, dict):
        raise PolicyInputError(f"input: must be a JSON object, not {type(document).__name__}")
    walk = _Walk()
    try:
        walk.value(document, 1)
    except _Refused as exc:
        raise PolicyInputError(f"{_where(tuple(reversed(exc.path)))}: {exc.problem}; the policy input is refused "
                               "(nothing was judged)") from None
    return CheckedInput(walk.strings, walk.size, walk.maybe_quoted)


def _where(path: tuple[Any, ...]) -> str:
    out = "input"
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{_short(part)}"
    return out


def _short(text: str) -> str:
    """A key or string as it may appear in a message: bounded, and printed escaped (repr)."""
    return repr(text[:60] + ("…" if len(text) > 60 else ""))[1:-1]


class _Refused(Exception):
    """A problem found by the walk; the path is collected as it unwinds (no path is built while all is well)."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.path: list[Any] = []


class _Walk:
    """One pass over the document: counts, sizes and checks every scalar; stops at the first problem."""

    def __init__(self) -> None:
        self.strings = 0
        self.size = 0
        self.maybe_quoted = False

    def string(self, text: str) -> None:
        self.strings += 1
        if self.strings > MAX_STRINGS:
            raise _Refused(f"the input holds more than {MAX_STRINGS} strings")
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError as exc:
            raise _Refused(f"not valid Unicode (a lone surrogate at character {exc.start})") from None
        if size > MAX_STRING_BYTES:
            raise _Refused(f"a string of {size} bytes; the limit is {MAX_STRING_BYTES}")
        if "\x00" in text:
            raise _Refused(f"holds a NUL character (at {text.index(chr(0))}), which the policy engine cannot read")
        if size > 1 and text[0] == '"' and text[-1] == '"':
            self.maybe_quoted = True
        self.size += size + 3
        if self.size > MAX_INPUT_BYTES:
            raise _Refused(f"the input is more than {MAX_INPUT_BYTES} bytes of JSON; the limit is {MAX_INPUT_BYTES}")

    def item(self, at: str | int, item: Any, depth: int) -> None:
        """One member of a container at `depth` (scalars checked inline); a refusal learns where it was."""
        check = _SCALARS.get(type(item))
        try:
            if check is not None and depth < MAX_INPUT_DEPTH:
                check(self, item)
            else:
                self.value(item, depth + 1)
        except _Refused as exc:
            exc.path.append(at)
            raise

    def value(self, value: Any, depth: int) -> None:
        if depth > MAX_INPUT_DEPTH:
            raise _Refused(f"the input nests deeper than {MAX_INPUT_DEPTH} levels")
        check = _SCALARS.get(type(value))
        if check is not None:
            check(self, value)
        elif isinstance(value, dict):
            self.size += 2
            for key, item in value.items():
                if not isinstance(key, str):
                    raise _Refused(f"a key of type {type(key).__name__} ({key!r:.60}); keys must be strings")
                self.string(key)
                self.item(key, item, depth)
        elif isinstance(value, (list, tuple)):
            self.size += 2
            for i, item in enumerate(value):
                self.item(i, item, depth)
        elif isinstance(value, bool) or value is None:
            self.size += 5
        elif isinstance(value, str):
            self.string(value)
        elif isinstance(value, int):
            _int(self, value)
        elif isinstance(value, float):
            _float(self, value)
        else:
            raise _Refused(f"a value of type {type(value).__name__}, which is not JSON")


def _str(walk: _Walk, value: Any) -> None:
    walk.string(value)


def _int(walk: _Walk, value: Any) -> None:
    if not INT_MIN <= value <= INT_MAX:
        raise _Refused(f"the integer {str(value)[:60]} is outside the 64-bit range the policy engine reads")
    walk.size += 20


def _float(walk: _Walk, value: Any) -> None:
    if not math.isfinite(value):
        raise _Refused(f"{value} is not a JSON number")
    walk.size += 24


def _plain(walk: _Walk, value: Any) -> None:
    walk.size += 5


# The exact built-in types, looked up first (the common case); subclasses take the isinstance path.
_SCALARS: dict[type, Callable[[_Walk, Any], None]] = {
    str: _str, int: _int, float: _float, bool: _plain, type(None): _plain}


# --- times, parsed once by the input builder ------------------------------------------------------
#
# rego-cpp took about 0.9 ms of the artifact decision (3.4 ms) to range-check and parse its two RFC 3339 times
# (a regular expression, substrings, time.parse_rfc3339_ns). The builder parses them here instead and
# passes `input.times`, a map from each time string to its nanoseconds since the epoch; the policy looks
# a string up in it and denies a time that is not there (or whose value is not an integral number), so a
# string edited after the map was built is never judged by a stale value. The rules are the ones the
# policy applied itself: the shape below, years 1970-2261 (int64 nanoseconds end in 2262), a day the
# month has (29 February in leap years only), hours 00-23, minutes and seconds 00-59, offsets up to
# 23:59, "Z" or "z" for UTC.

_RFC3339 = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,9}))?"
                      r"(?:[Zz]|([+-])([0-9]{2}):([0-9]{2}))")
_MONTH_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_EPOCH_DAY = datetime.date(1970, 1, 1).toordinal()


def rfc3339_ns(text: Any) -> int | None:
    """Nanoseconds since the epoch of an RFC 3339 time, or None when `text` is not one the policies accept."""
    found = _RFC3339.fullmatch(text) if isinstance(text, str) else None
    if found is None:
        return None
    year, month, day, hour, minute, second = (int(found.group(i)) for i in range(1, 7))
    if not (1970 <= year <= 2261 and 1 <= month <= 12 and 1 <= day <= _MONTH_DAYS[month - 1]
            and hour <= 23 and minute <= 59 and second <= 59):
        return None
    if month == 2 and day == 29 and not (year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)):
        return None
    offset = 0
    if found.group(8):
        off_h, off_m = int(found.group(9)), int(found.group(10))
        if off_h > 23 or off_m > 59:
            return None
        offset = (off_h * 60 + off_m) * 60 * (1 if found.group(8) == "+" else -1)
    days = datetime.date(year, month, day).toordinal() - _EPOCH_DAY
    seconds = days * 86400 + hour * 3600 + minute * 60 + second - offset
    return seconds * 1_000_000_000 + int((found.group(7) or "").ljust(9, "0"))


def times_input(*texts: Any) -> dict[str, int]:
    """`input.times`: each of `texts` that is an RFC 3339 time the policies accept, with its nanoseconds."""
    out: dict[str, int] = {}
    for text in texts:
        ns = rfc3339_ns(text)
        if ns is not None:
            out[text] = ns
    return out
