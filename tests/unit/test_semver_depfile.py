from __future__ import annotations

from agentfactory.semver import is_semver, sort_key
from pipelines.toolchain import _parse_depfile


def test_semver_precedence() -> None:
    ordered = ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2",
               "1.0.0-beta.11", "1.0.0-rc.1", "1.0.0", "1.2.0", "1.10.0", "2.0.0"]
    assert sorted(reversed(ordered), key=sort_key) == ordered
    assert sort_key("1.0.0+build.1")[:5] == sort_key("1.0.0")[:5]
    assert sort_key("not-a-version") < sort_key("0.0.1")
    assert is_semver("1.2.3-rc.1+b5") and not is_semver("01.2.3") and not is_semver("v1.2.3")


def test_depfile_parsing() -> None:
    text = "/tmp/x/main.o: src/main.c src/util.h \\\n  /opt/zig/lib/stdio.h \\\n  src/with\\ space.h\n"
    assert _parse_depfile(text) == ["src/main.c", "src/util.h", "/opt/zig/lib/stdio.h", "src/with space.h"]


def test_semver_is_ascii_and_whole_string() -> None:
    """A version is an identifier: Unicode digits, a trailing newline or a huge string are not semver."""
    assert is_semver("1.2.3")
    for bad in ("\u0661.0.0", "1.0.0\n", "1.0.0\n2.0.0", "1." + "9" * 200 + ".0", "1.0.0-\u0661"):
        assert not is_semver(bad), bad
