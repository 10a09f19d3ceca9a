"""OPA's `sprintf` as its Go implementation formats, for a policy engine that supplies the builtin itself.

OPA's Wasm target leaves `sprintf` to the host (an "SDK builtin"). A deny message must read the same
whichever engine judged, so this follows OPA's topdown `builtinSprintf` and Go's `fmt`: each argument is
converted as OPA converts it (a number to an int, a big integer or a float64; a string to itself; any other
value to its Rego text, as `ast.Value.String()` writes it), then formatted by the verbs the policies use
(`%s`, `%v`, `%d`, `%%`), with Go's `%!verb(type=value)` for a mismatch. Any other verb, flag or width is
an error, so the decision is refused rather than worded differently from OPA.
"""

from __future__ import annotations

import decimal
import json
import re
from dataclasses import dataclass
from typing import Any

_VERB = re.compile(r"%(.)", re.S)
_INT64 = (-(2**63), 2**63 - 1)
_INTEGER = re.compile(r"-?[0-9]+")


class FormatError(ValueError):
    """A format this implementation does not reproduce exactly (refused instead of formatted differently)."""


@dataclass(frozen=True)
class Number:
    """A JSON number as written (OPA keeps a number's text: `10.0` is not the int 10 to sprintf)."""

    text: str


def loads_numbers_as_text(text: str) -> Any:
    """JSON with every number kept as its text (Number), so sprintf sees what OPA's value holds."""
    return json.loads(text, parse_int=Number, parse_float=Number, parse_constant=_no_constant)


def _no_constant(name: str) -> Any:
    raise FormatError(f"{name} is not a JSON value")


def _go_quote(s: str) -> str:
    """strconv.Quote: Go's escapes for quotes, backslashes and what unicode.IsPrint rejects."""
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == " " or (ch.isprintable() and o != 0x7F):
            out.append(ch)
        elif ch in "\a\b\f\n\r\t\v":
            out.append({"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t",
                        "\v": "\\v"}[ch])
        elif o < 0x20 or o == 0x7F:
            out.append(f"\\x{o:02x}")
        elif o < 0x10000:
            out.append(f"\\u{o:04x}")
        else:
            out.append(f"\\U{o:08x}")
    out.append('"')
    return "".join(out)


def rego_text(value: Any) -> str:
    """A value as OPA's ast.Value.String() writes it: strings quoted, objects with sorted keys, ", " between."""
    if isinstance(value, str):
        return _go_quote(value)
    if isinstance(value, Number):
        return value.text
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if isinstance(value, list):
        return "[" + ", ".join(rego_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{rego_text(k)}: {rego_text(value[k])}" for k in sorted(value)) + "}"
    raise FormatError(f"a {type(value).__name__} is not a Rego value")


def _go_float(f: float) -> str:
    """strconv.FormatFloat(f, 'g', -1, 64), which Go's %v uses: the shortest digits, in %e form when the
    exponent is below -4 or at least 6 (1e+06, 1.0000005e+06, 123456)."""
    if f != f or f in (float("inf"), float("-inf")):
        return {True: "+Inf", False: "-Inf"}[f > 0] if f == f else "NaN"
    if f == 0:
        return "-0" if str(f).startswith("-") else "0"
    sign, digits, exponent = decimal.Decimal(repr(f)).normalize().as_tuple()
    assert isinstance(exponent, int)
    d = "".join(map(str, digits))
    point = len(d) + exponent  # the decimal point's position in d
    exp = point - 1
    minus = "-" if sign else ""
    if exp < -4 or exp >= 6:
        mantissa = d[0] + ("." + d[1:] if len(d) > 1 else "")
        return f"{minus}{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    if point <= 0:
        return f"{minus}0.{'0' * -point}{d}"
    if point >= len(d):
        return minus + d + "0" * (point - len(d))
    return f"{minus}{d[:point]}.{d[point:]}"


def _argument(value: Any) -> tuple[str, Any]:
    """(Go type, Go value) of one sprintf argument, converted as OPA's builtinSprintf converts it."""
    if isinstance(value, Number):
        text = value.text
        if _INTEGER.fullmatch(text):
            n = int(text)
            return ("int64", n) if _INT64[0] <= n <= _INT64[1] else ("*big.Int", n)
        try:
            return "float64", float(text)
        except ValueError:
            return "string", text
    if isinstance(value, str):
        return "string", value
    return "string", rego_text(value)


def _shown(kind: str, value: Any) -> str:
    return _go_float(value) if kind == "float64" else str(value)


def sprintf(template: str, args: list[Any]) -> str:
    """Go's fmt.Sprintf(template, args...) after OPA's argument conversion, for %s, %v, %d and %%."""
    converted = [_argument(a) for a in args]
    used = 0
    out: list[str] = []
    pos = 0
    for m in _VERB.finditer(template):
        out.append(template[pos:m.start()])
        pos = m.end()
        verb = m.group(1)
        if verb == "%":
            out.append("%")
            continue
        if verb not in "svd":
            raise FormatError(f"sprintf verb %{verb} is not supported by this engine (only %s, %v, %d and %%)")
        if used >= len(converted):
            out.append(f"%!{verb}(MISSING)")
            continue
        kind, value = converted[used]
        used += 1
        if verb == "v" or (verb == "s" and kind == "string") or (verb == "d" and kind in ("int64", "*big.Int")):
            out.append(_shown(kind, value))
        else:
            out.append(f"%!{verb}({kind}={_shown(kind, value)})")
    out.append(template[pos:])
    if template.endswith("%") and not template.endswith("%%"):
        raise FormatError("sprintf format ends with a lone %")
    if used < len(converted):
        extra = ", ".join(f"{kind}={_shown(kind, value)}" for kind, value in converted[used:])
        out.append(f"%!(EXTRA {extra})")
    return "".join(out)
