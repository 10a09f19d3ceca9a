"""A bounded YAML reader that remembers where every value came from.

PyYAML's own loaders expand aliases without limit (the "billion laughs" bomb) and let a
duplicate key silently win. Here the document is composed into nodes and constructed by
hand, counting every node visited, so that a bomb stops early with a clear error, duplicate
keys are refused, and each value's path maps to its line for error messages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from .errors import InputError

MAX_BYTES = 256 * 1024
# libyaml's parser when the wheel has it (10x faster); composing only, so no constructor of its runs.
_COMPOSER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
MAX_NODES = 20_000
MAX_DEPTH = 64

Path_ = tuple[str | int, ...]


@dataclass
class Located:
    """A parsed document and the 1-based line of every value in it."""

    data: Any
    lines: dict[Path_, int] = field(default_factory=dict)

    def line_of(self, path: Path_) -> int | None:
        """The line of `path`, or of its nearest ancestor that has one."""
        p = tuple(path)
        while p:
            if p in self.lines:
                return self.lines[p]
            p = p[:-1]
        return self.lines.get(())


class _Builder:
    def __init__(self, where: str) -> None:
        self.where = where
        self.count = 0
        self.lines: dict[Path_, int] = {}
        # SafeConstructor knows the YAML 1.1 core tags (int, float, bool, null, str, timestamp).
        self.constructor = yaml.SafeLoader("")

    def fail(self, node: yaml.Node, message: str) -> InputError:
        return InputError(f"{self.where}:{node.start_mark.line + 1}", message)

    def build(self, node: yaml.Node, path: Path_, depth: int) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise self.fail(node, f"document expands to more than {MAX_NODES} values "
                                  "(YAML alias bomb?); refusing to read it")
        if depth > MAX_DEPTH:
            raise self.fail(node, f"nesting deeper than {MAX_DEPTH} levels")
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i), depth + 1) for i, item in enumerate(node.value)]
        if isinstance(node, yaml.MappingNode):
            result: dict[str, Any] = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    raise self.fail(key_node, "merge keys ('<<') are not allowed")
                key = self.build(key_node, path, depth + 1)
                if not isinstance(key, str):
                    raise self.fail(key_node, f"mapping key {key!r} must be a string")
                if key in result:
                    raise self.fail(key_node, f"duplicate key {key!r}")
                self.lines[(*path, key)] = key_node.start_mark.line + 1  # errors point at the key
                result[key] = self.build(value_node, (*path, key), depth + 1)
            return result
        raise self.fail(node, f"unsupported YAML node {node.tag}")

    def scalar(self, node: yaml.ScalarNode) -> Any:
        try:
            value = self.constructor.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            raise self.fail(node, f"bad scalar: {exc}") from None
        if not isinstance(value, str | int | float | bool | type(None)):
            # Timestamps and binary: keep the text, so schemas judge what the author wrote.
            return node.value
        return value


def load_yaml(text: bytes, where: str) -> Located:
    """Parse one YAML document from `text`; raise `InputError` naming `where` and the line."""
    if len(text) > MAX_BYTES:
        raise InputError(where, f"file is {len(text)} bytes; the limit is {MAX_BYTES}")
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(where, f"not UTF-8 text (byte {exc.start})") from None
    try:
        nodes = list(yaml.compose_all(decoded, Loader=_COMPOSER))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        loc = f"{where}:{mark.line + 1}:{mark.column + 1}" if mark else where
        problem = exc.problem or exc.context or "invalid YAML"
        raise InputError(loc, f"YAML syntax error: {problem}") from None
    except yaml.YAMLError as exc:
        raise InputError(where, f"YAML error: {exc}") from None
    if len(nodes) != 1:
        raise InputError(where, f"expected exactly one YAML document, found {len(nodes)}")
    builder = _Builder(where)
    data = builder.build(nodes[0], (), 0)
    return Located(data=data, lines=builder.lines)
