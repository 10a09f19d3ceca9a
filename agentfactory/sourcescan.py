"""Static security checks of template sources, run before anything is built.

The template policy (`policies/template.rego`) receives these findings and blocks a template when
one has a blocking severity (`data.agentfactory.config.blocking_severities`, high and critical).
The checks are lexical, not a compiler: they look for what a reviewer must see (process, socket
and dynamic-loading calls, inline assembly, secrets, opaque blobs, odd URLs, obfuscation) and are
tuned so that ordinary C and WAT stays quiet. Everything here runs in linear time on hostile
input: every regular expression is anchored on a literal, bounded, or uses possessive
quantifiers, so a 1 MiB source cannot make the scan backtrack for minutes.

Matches inside comments are ignored (a comment does not run), except secrets (a key in a comment
is leaked all the same) and Unicode bidirectional controls (Trojan Source hides code through
comments). A finding is dropped when its line carries, in a comment,
`agentfactory:allow <class> <reason>`; without a reason the marker is ignored.
See docs/static-checks.md.
"""

from __future__ import annotations

import bisect
import ipaddress
import math
import os
import re
import stat
from collections import Counter, deque
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .errors import InputError
from .template import MAX_SOURCE_BYTES, MAX_TOTAL_SOURCE_BYTES, Template

CLASSES: dict[str, str] = {
    # Inline assembly is raw wasm instructions (or an asm label renaming a symbol): it escapes
    # the C semantics reviewers read and can call any import directly. No agent needs it: blocks.
    "inline-asm": "high",
    # Starting programs: agents have no process API (the policy allows none); intent is explicit.
    "process-exec": "high",
    # Code loaded at run time is neither reviewed nor in the SBOM.
    "dynamic-loading": "high",
    # Agents get no network; a socket call is exfiltration or a command channel.
    "socket": "high",
    # Already leaked to everyone who reads the repository or the artifact: rotate, then remove.
    "embedded-secret": "critical",
    # Opaque data is often legitimate (test vectors, tables): a reviewer decides, it does not block.
    "encoded-blob": "medium",
    # A string is not a connection (agents have no network), but it shows intent: review.
    "suspicious-url": "medium",
    # Heuristics with some false positives: review, do not block on them alone.
    "obfuscation": "medium",
}
SEVERITIES = ("low", "medium", "high", "critical")

# Files scanned anywhere in the template folder, and additionally under a dependency's path.
SCAN_SUFFIXES = frozenset({".c", ".h", ".wat", ".wast", ".inc", ".def"})
VENDOR_SUFFIXES = SCAN_SUFFIXES | {".s", ".S", ".asm", ".cc", ".cpp", ".cxx", ".hh", ".hpp", ".hxx", ".ipp"}
WAT_SUFFIXES = frozenset({".wat", ".wast"})
# Reading is bounded: one file at most the per-source limit, all files together the total limit
# (what the template rules allow), so a huge undeclared header cannot stall the scan.
MAX_FILE_BYTES = MAX_SOURCE_BYTES
MAX_SCAN_BYTES = MAX_TOTAL_SOURCE_BYTES

BLOB_MIN_CHARS = 256  # a string literal shorter than this is a table, not a payload
ARRAY_MIN_VALUES = 1024  # a 256-entry lookup table is normal; a 1024+ value initializer is a file
ESCAPE_RUN_MIN = 8  # consecutive escapes spelling printable text


@dataclass(frozen=True)
class Finding:
    """One thing a reviewer must look at: where it is, what it is, and what to do about it."""

    file: str  # posix path relative to the template folder
    line: int  # 1-based
    cls: str  # one of CLASSES
    severity: str  # low | medium | high | critical
    message: str

    def __post_init__(self) -> None:
        if self.cls not in CLASSES:
            raise ValueError(f"unknown finding class {self.cls!r}")
        if self.severity not in SEVERITIES:
            raise ValueError(f"unknown severity {self.severity!r}")

    def to_json(self) -> dict[str, object]:
        """The shape the template policy reads (`input.findings[_]`)."""
        return {"file": self.file, "line": self.line, "class": self.cls, "severity": self.severity,
                "message": self.message}


# ---------------------------------------------------------------------------------------------
# Lexing: comments, string and character literals, C's translation phases 1-2
# ---------------------------------------------------------------------------------------------

_NOT_NL = re.compile(r"[^\n]")
# C phases 1-2: trigraphs, then backslash-newline splices. A splice can end a comment early
# (`*\` newline `/`) or hide one, so the lexer must see what the compiler sees.
_PHASE12 = re.compile(r"\?\?/\r?\n|\\\r?\n|\?\?[=/'()!<>\-]")
_TRIGRAPHS = {"=": "#", "/": "\\", "'": "^", "(": "[", ")": "]", "!": "|", "<": "{", ">": "}", "-": "~"}
# Unterminated literals end at the line end, unterminated block comments at the end of the
# file: every token always matches, so nothing is ever rescanned.
_C_TOKEN = re.compile(
    r"(?P<lc>//[^\n]*+)"
    r"|(?P<bc>/\*[\s\S]*?(?:\*/|\Z))"
    r'|(?P<str>"[^"\\\n]*+(?:\\[\s\S][^"\\\n]*+)*+"?)'
    r"|(?P<chr>'[^'\\\n]*+(?:\\[\s\S][^'\\\n]*+)*+'?)"
)
_WAT_TOKEN = re.compile(
    r"(?P<lc>;;[^\n]*+)"
    r"|(?P<bc>\(;)"
    r'|(?P<str>"[^"\\\n]*+(?:\\[\s\S][^"\\\n]*+)*+"?)'
)
_WAT_BLOCK = re.compile(r"\(;|;\)")
_C_GAP = re.compile(r"\s*+(?:u8|[LuU])?")  # between adjacent string literals (concatenated)
_WAT_GAP = re.compile(r"\s*+")
_CHAR_GAP = re.compile(r"\s*+,\s*+")

Span = tuple[int, int]


def _blank(s: str) -> str:
    return _NOT_NL.sub(" ", s) if "\n" in s else " " * len(s)


def _phases12(text: str) -> tuple[str, list[int], list[int], list[int]]:
    """Apply trigraphs and line splices; return the new text, a position map and trigraphs."""
    if "??" not in text and "\\\n" not in text and "\\\r\n" not in text:
        return text, [], [], []
    parts: list[str] = []
    brk: list[int] = []  # positions in the new text after which `delta` applies
    delta: list[int] = []
    trigraphs: list[int] = []
    last = out = shift = 0
    for m in _PHASE12.finditer(text):
        s, e = m.span()
        tok = m.group()
        parts.append(text[last:s])
        out += s - last
        if tok.startswith("??"):
            trigraphs.append(out)
        rep = "" if tok.endswith("\n") else _TRIGRAPHS[tok[2]]
        parts.append(rep)
        out += len(rep)
        shift += (e - s) - len(rep)
        brk.append(out)
        delta.append(shift)
        last = e
    parts.append(text[last:])
    return "".join(parts), brk, delta, trigraphs


Token = tuple[str, int, int]  # kind ("comment", "string", "char"), start, end


def _lex_c(work: str) -> list[Token]:
    kinds = {"lc": "comment", "bc": "comment", "str": "string", "chr": "char"}
    return [(kinds[m.lastgroup or "lc"], *m.span()) for m in _C_TOKEN.finditer(work)]


def _lex_wat(work: str) -> list[Token]:
    tokens: list[Token] = []
    pos, n = 0, len(work)
    while (m := _WAT_TOKEN.search(work, pos)) is not None:
        s, e = m.span()
        if m.lastgroup == "bc":  # block comments nest in WAT
            depth, e = 1, m.end()
            while depth:
                b = _WAT_BLOCK.search(work, e)
                if b is None:
                    e = n
                    break
                depth += 1 if b.group() == "(;" else -1
                e = b.end()
        tokens.append(("string" if m.lastgroup == "str" else "comment", s, e))
        pos = max(e, s + 1)
    return tokens


def _closing(work: str, s: int, e: int) -> int:
    """End of a literal's content: before the closing quote, if there is one."""
    return e - 1 if e - s >= 2 and work[e - 1] == work[s] else e


def _masks(work: str, tokens: list[Token]) -> tuple[str, str]:
    """The text without comments, and without comments and literal contents (quotes kept).

    Blanks keep newlines, so positions and line numbers are those of `work`.
    """
    nocomment: list[str] = []
    code: list[str] = []
    last = 0
    for kind, s, e in tokens:
        gap = work[last:s]
        nocomment.append(gap)
        code.append(gap)
        if kind == "comment":
            blank = _blank(work[s:e])
            nocomment.append(blank)
            code.append(blank)
        else:
            nocomment.append(work[s:e])
            c = _closing(work, s, e)
            code += (work[s], _blank(work[s + 1:c]), work[c:e])
        last = e
    tail = work[last:]
    return "".join(nocomment) + tail, "".join(code) + tail


_C_ESCAPE = re.compile(r"\\(?:x([0-9A-Fa-f]++)|([0-7]{1,3})|u([0-9A-Fa-f]{4})|U([0-9A-Fa-f]{8})|([\s\S]))")
_WAT_ESCAPE = re.compile(r"\\(?:([0-9A-Fa-f]{2})|u\{([0-9A-Fa-f]{1,6})\}|([\s\S]))")
_SIMPLE_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "f": "\f", "v": "\v", "0": "\0"}


def _chr(value: int) -> str:
    return chr(value) if value <= 0x10FFFF else "\ufffd"


def _decode(raw: str, wat: bool) -> tuple[str, int]:
    """Literal content with escapes resolved, and how many source characters were escapes."""
    escaped = 0

    def one(m: re.Match[str]) -> str:
        nonlocal escaped
        escaped += m.end() - m.start()
        if wat:
            hx, uni, other = m.groups()
            if hx is not None:
                return chr(int(hx, 16))
            if uni is not None:
                return _chr(int(uni, 16))
            return _SIMPLE_ESCAPES.get(other, other)
        hx, octal, u4, u8, other = m.groups()
        if hx is not None:
            return _chr(int(hx[-8:], 16))
        if octal is not None:
            return chr(int(octal, 8))
        if u4 is not None or u8 is not None:
            return _chr(int(u4 or u8, 16))
        return _SIMPLE_ESCAPES.get(other, other)

    if "\\" not in raw:
        return raw, 0
    return (_WAT_ESCAPE if wat else _C_ESCAPE).sub(one, raw), escaped


class _Source:
    """One file, lexed: the text the compiler sees, with comments and literals located."""

    def __init__(self, text: str, path: str) -> None:
        self.text = text
        self.path = path
        self.wat = PurePosixPath(path).suffix.lower() in WAT_SUFFIXES
        # WAT has no translation phases: the text is what the assembler reads.
        self.work, self._brk, self._delta, self.trigraphs = (text, [], [], []) if self.wat else _phases12(text)
        tokens = (_lex_wat if self.wat else _lex_c)(self.work)
        self.comments = [(s, e) for kind, s, e in tokens if kind == "comment"]
        self.strings = [(s, e) for kind, s, e in tokens if kind == "string"]
        self.chars = [(s, e) for kind, s, e in tokens if kind == "char"]
        self.nocomment, self.code = _masks(self.work, tokens)
        self._newlines: list[int] | None = None
        self._comment_starts = [s for s, _ in self.comments]

    def orig(self, pos: int) -> int:
        """Position in the file of a position in the translated text."""
        i = bisect.bisect_right(self._brk, pos) - 1
        return pos + (self._delta[i] if i >= 0 else 0)

    def raw_line(self, orig_pos: int) -> int:
        if self._newlines is None:
            self._newlines = [m.start() for m in re.finditer("\n", self.text)]
        return bisect.bisect_left(self._newlines, orig_pos) + 1

    def line(self, pos: int) -> int:
        return self.raw_line(self.orig(pos))

    def in_comment(self, pos: int) -> bool:
        i = bisect.bisect_right(self._comment_starts, pos) - 1
        return i >= 0 and pos < self.comments[i][1]

    def inner(self, span: Span) -> str:
        s, e = span
        return self.work[s + 1:_closing(self.work, s, e)]

    def groups(self, spans: list[Span], gap: re.Pattern[str]) -> list[list[Span]]:
        """Literals the compiler joins: adjacent strings, or char literals in one initializer."""
        out: list[list[Span]] = []
        for span in spans:
            if out and gap.fullmatch(self.nocomment, out[-1][-1][1], span[0]):
                out[-1].append(span)
            else:
                out.append([span])
        return out


# ---------------------------------------------------------------------------------------------
# Names: process, dynamic-loading and socket APIs (libc, POSIX, Win32, WASI/WASIX imports)
# ---------------------------------------------------------------------------------------------

_FAMILIES = {
    "process-exec": (r"_?w?system|_?w?popen|_?w?exec(?:l|le|lp|lpe|v|ve|vp|vpe)|fexecve|execveat|v?fork|_Fork"
                     r"|posix_spawnp?|_?w?spawn(?:l|le|lp|lpe|v|ve|vp|vpe)|ShellExecute(?:Ex)?[AW]?|WinExec"
                     r"|CreateProcess(?:AsUser|WithLogonW|WithTokenW)?[AW]?|proc_(?:exec[23]?|spawn2?|fork)"),
    "dynamic-loading": r"dl(?:open|sym|vsym|mopen)|LoadLibrary(?:Ex)?[AW]?|GetProcAddress|LdrLoadDll",
    "socket": (r"socket(?:pair)?|connect|bind|listen|accept4?|getaddrinfo|gethostby(?:name2?|addr)"
               r"|sendto|recvfrom|sendmsg|recvmsg|WSAStartup|WSASocket[AW]?"
               r"|sock_(?:open|accept(?:_v2)?|send(?:_to|_file)?|recv(?:_from)?|connect|bind|listen|shutdown"
               r"|status|pair|addr_(?:local|peer|resolve)|[sg]et_opt_\w++|(?:join|leave)_multicast_v[46])"),
}
_GROUP = {"process-exec": "p", "dynamic-loading": "d", "socket": "s"}
_CLASS_OF_GROUP = {v: k for k, v in _GROUP.items()}
# (the look-ahead lets the engine skip non-identifier characters fast)
_NAME = re.compile(r"(?=[A-Za-z_])\b(?:__wasi_|__wasix_)?(?:" + "|".join(
    f"(?P<{_GROUP[c]}>{p})" for c, p in _FAMILIES.items()) + r")\b")
_FULL = {c: re.compile(p) for c, p in _FAMILIES.items()}
# Common words that are also ordinary identifiers (a parser's accept(), a `listen` flag): only
# a call, a function pointer or a macro alias counts, and never a member access.
_AMBIGUOUS = frozenset({"system", "fork", "socket", "connect", "bind", "listen", "accept"})
_POINTER_OK = frozenset({"system", "fork"})  # `f = system;` is no variable in practice
# Names a template may define itself (and then calls are to its own function). `system` and the
# unambiguous names are always reported: a definition in `#if 0` must not silence a real call.
_SHADOWABLE = _AMBIGUOUS - {"system"}
# WASIX/other host imports that mean networking or processes when a module imports them.
_IMPORT_EXTRA = {"socket": re.compile(r"sock_\w++|port_\w++|resolve|http_request"),
                 "process-exec": re.compile(r"proc_(?:exec\w*+|spawn\w*+|fork\w*+)")}
_WASI_PREFIX = re.compile(r"__wasix?_")
_ASM_WORDS = frozenset({"asm", "__asm", "__asm__"})
_DANGER_WORDS = re.compile(
    r"(?<![A-Za-z0-9_])(?:(?:" + "|".join(_FAMILIES.values()) + r")(?![A-Za-z0-9_])"
    r"|/bin/(?:ba|da|z|k|c|tc)?sh\b|cmd\.exe|powershell)")

_WHY = {
    "process-exec": "starts another program: agents cannot spawn processes (WASI has no process API "
                    "and the policy grants none); remove it, or ask for a declared host tool in spec.tools",
    "dynamic-loading": "loads code at run time that is neither in the reviewed sources nor in the SBOM; "
                       "link the code in as a vendored dependency instead",
    "socket": "opens or uses a network socket: agents get no network access; remove it, or ask for a "
              "declared host tool in spec.tools",
}


def _classify(name: str) -> str | None:
    """The class of a dangerous API name, or None."""
    bare = _WASI_PREFIX.sub("", name, count=1) if name.startswith("__wasi") else name
    for cls, rx in _FULL.items():
        if rx.fullmatch(bare):
            return cls
    return None


def _classify_import(name: str) -> str | None:
    cls = _classify(name)
    if cls is None:
        for c, rx in _IMPORT_EXTRA.items():
            if rx.fullmatch(name):
                return c
    return cls


# ---------------------------------------------------------------------------------------------
# Patterns of the other classes
# ---------------------------------------------------------------------------------------------

_ASM = re.compile(r"\b(?:__asm__|__asm)\b|\basm\s*+(?:(?:volatile|__volatile__|inline|goto)\b\s*+)*+[({]")
_CALL_AFTER = re.compile(r"\s*+(?:\)\s*+)?\(")
_POINTER_BEFORE = re.compile(r"(?:[=,(?:]|\breturn)\s*+&?\s*+\(?\s*+\Z")
_POINTER_AFTER = re.compile(r"\s*+\)?\s*+[;,)}:]")
_MEMBER_BEFORE = re.compile(r"(?:\.|->|\(\s*+\*)\s*+\Z")  # s.connect, s->listen, (*accept)(…)
_FUNC_DEF = re.compile(r"\b(socket|connect|bind|listen|accept|fork)\s*+\((?:[^;{}()]++|\([^;{}()]*+\))*+\)\s*+\{")
_MACRO_DEF = re.compile(r"^[ \t]*+#[ \t]*+define[ \t]++([A-Za-z_]\w*+)\(", re.M)
_DEFINE_ALIAS = re.compile(r"^[ \t]*+#[ \t]*+define[ \t]++([A-Za-z_]\w*+)(?:\([^)\n]*+\))?[ \t]++"
                           r"([A-Za-z_]\w*+)[ \t]*+$", re.M)
_PASTE_CALL = re.compile(r"\b[A-Za-z_]\w*+\s*+\(\s*+([A-Za-z_]\w*+)\s*+,\s*+([A-Za-z_]\w*+)\s*+"
                         r"(?:,\s*+([A-Za-z_]\w*+)\s*+)?\)")
_INCLUDE = re.compile(r'^[ \t]*+#[ \t]*+include[ \t]*+([<"])([^>"\n]{1,255}+)[>"]', re.M)
_C_IMPORT_NAME = re.compile(r'\b(?:__)?import_name(?:__)?\s*+\(\s*+"([^"\\\n]*+(?:\\.[^"\\\n]*+)*+)"')
_WAT_IMPORT = re.compile(r'\(\s*+import\s++"([^"\\\n]*+(?:\\.[^"\\\n]*+)*+)"\s++"([^"\\\n]*+(?:\\.[^"\\\n]*+)*+)"')

# (what, literal hints, pattern): the pattern runs only when a hint occurs in the file.
_SECRETS: tuple[tuple[str, tuple[str, ...], re.Pattern[str]], ...] = (
    ("a PEM private key", ("PRIVATE KEY",), re.compile(r"-----BEGIN[A-Z0-9 ]{0,40}PRIVATE KEY")),
    ("an AWS access key id", ("AKIA", "ASIA"), re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("a GitHub token", ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
     re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{22,}+)\b")),
    ("a Slack token", ("xox",), re.compile(r"\bxox[abposr]-[0-9A-Za-z]{6,}+-[0-9A-Za-z-]{6,}+")),
    ("a Slack webhook URL", ("hooks.slack.com",),
     re.compile(r"hooks\.slack\.com/services/T[0-9A-Za-z]++/B[0-9A-Za-z]++/[0-9A-Za-z]{16,}+")),
    ("a Google API key", ("AIza",), re.compile(r"\bAIza[0-9A-Za-z_\-]{35}(?![0-9A-Za-z_\-])")),
    ("a Stripe live key", ("k_live_",), re.compile(r"\b[rs]k_live_[0-9A-Za-z]{16,}+")),
    ("a JSON Web Token", ("eyJ",),
     re.compile(r"\beyJ[A-Za-z0-9_\-]{8,}+\.eyJ[A-Za-z0-9_\-]{8,}+\.[A-Za-z0-9_\-]{8,}+")),
)
# Credentials assigned to a telling name. These run on an ASCII-lower-cased copy (same length, so
# the same positions): a case-insensitive alternation would be several times slower.
_SECRET_WORDS = ("password", "passwd", "passphrase", "secret", "key", "token")
_SECRET_WORD = r"(?:password|passwd|passphrase|secret(?:_?key)?|api_?key|access_?key|private_?key|auth_?token|token)"
_SECRET_ASSIGN = re.compile(
    _SECRET_WORD + r"(?:s|_?\d++)?(?!\w)\s*+(?:\[[^\]\n]{0,16}+\]\s*+)?[=:]\s*+"
    r"(?:\([^()\n]{0,32}+\)\s*+)?(?:u8|[lu])?\"([^\"\\\n]{8,}+)\"")
_SECRET_DEFINE = re.compile(
    r"(?m)^[ \t]*+#[ \t]*+define[ \t]++\w*?" + _SECRET_WORD + r"\w*+[ \t]++(?:u8|[lu])?\"([^\"\\\n]{8,}+)\"")
_ASCII_LOWER = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}
_PLACEHOLDER = re.compile(r"(?i)example|placeholder|changeme|dummy|redacted|xxxx|your[_-]|[%<>${}\s]")

_URL = re.compile(r"(?i)\b(?:https?|ftp|wss?)://(?:([^\s/?#@\"'<>\\]*+)@)?(\[[0-9A-Fa-f:.]*+\]|[^\s/?#:\"'<>\\]++)")
_URL_HOSTS = {
    # paste sites and file drops: where payloads and stolen data go
    "pastebin.com": "a paste site", "paste.ee": "a paste site", "hastebin.com": "a paste site",
    "ghostbin.com": "a paste site", "paste.rs": "a paste site", "dpaste.com": "a paste site",
    "rentry.co": "a paste site", "transfer.sh": "a file-sharing service", "file.io": "a file-sharing service",
    "0x0.st": "a file-sharing service", "anonfiles.com": "a file-sharing service",
    "gofile.io": "a file-sharing service", "catbox.moe": "a file-sharing service",
    "cdn.discordapp.com": "a file-sharing service", "discord.com/api/webhooks": "a chat webhook",
    # tunnels: reach a machine behind NAT
    "ngrok.io": "a tunnelling service", "ngrok.app": "a tunnelling service",
    "ngrok-free.app": "a tunnelling service", "trycloudflare.com": "a tunnelling service",
    "serveo.net": "a tunnelling service", "localtunnel.me": "a tunnelling service",
    "loca.lt": "a tunnelling service", "localhost.run": "a tunnelling service",
    # unreviewed raw content
    "raw.githubusercontent.com": "raw, unreviewed repository content",
    "gist.githubusercontent.com": "raw, unreviewed gist content",
    # request catchers (out-of-band exfiltration)
    "webhook.site": "a request catcher", "requestbin.com": "a request catcher",
    "pipedream.net": "a request catcher", "interact.sh": "a request catcher", "oast.fun": "a request catcher",
    "oastify.com": "a request catcher", "burpcollaborator.net": "a request catcher",
}

_BASE64 = re.compile(r"[A-Za-z0-9+/_\-]++={0,2}")
_HEX = re.compile(r"[0-9A-Fa-f]++")
_LINE_ESCAPES = re.compile(r"\\[nr]|\s++")
_NUMBER = r"(?:0[xX][0-9A-Fa-f]++|[0-9]++)[uUlL]*+"
# Any length, counted afterwards: `{1024,}` would rescan every shorter run from each position.
_NUM_RUN = re.compile(r"(?:" + _NUMBER + r"\s*+,\s*+)++")
_NUM_BRACES = re.compile(r"\{\s*+((?:" + _NUMBER + r"\s*+,\s*+){3,64}+(?:" + _NUMBER + r")?)\s*+\}")
_C_ESCAPE_RUN = re.compile(r"(?:\\x[0-9A-Fa-f]++|\\[0-7]{1,3}+){" + str(ESCAPE_RUN_MIN) + ",}+")
_WAT_ESCAPE_RUN = re.compile(r"(?:\\[0-9A-Fa-f]{2}){" + str(ESCAPE_RUN_MIN) + ",}+")
_UCN = re.compile(r"\\(?:u[0-9A-Fa-f]{4}|U[0-9A-Fa-f]{8})")
_BIDI = re.compile("[\u202a-\u202e\u2066-\u2069]")
_INVISIBLE = re.compile("[\u200b-\u200d\u2060\ufeff]")
_XOR = re.compile(
    r"(?:\b[A-Za-z_]\w*+\s*+\[[^\]\n]{1,40}+\]|\*\s*+[A-Za-z_]\w*+(?:\+\+)?)\s*+\^=\s*+"
    r"(?:0[xX][0-9A-Fa-f]++|[0-9]++|'[^'\n]{1,4}+'|[A-Za-z_]\w*+\s*+\[[^\]%\n]*+%[^\]\n]*+\])"
    r"|\b[A-Za-z_]\w*+\s*+\[[^\]\n]{1,40}+\]\s*+=\s*+[^;\n]{0,80}?\^\s*+(?:0[xX][0-9A-Fa-f]++|'[^'\n]{1,4}+')")
_LOOP = re.compile(r"\b(?:for|while)\b")
_WAT_XOR = re.compile(r"\bi32\.xor\b")
_ALLOW = re.compile(r"agentfactory:allow[ \t]++([a-z-]++)(?:[ \t]++([^\n]*))?")


def _redact(value: str) -> str:
    """Enough of a secret to find it, not enough to use it (findings end up in logs)."""
    return value[:4] + "…" if len(value) > 4 else "…"


def _preview(value: str, limit: int = 24) -> str:
    shown = "".join(ch if " " <= ch <= "~" else "." for ch in value[:limit])
    return shown + ("…" if len(value) > limit else "")


def _entropy(s: str) -> float:
    n = len(s)
    return -sum(c / n * math.log2(c / n) for c in Counter(s).values()) if n else 0.0


def _c_int(token: str) -> int:
    """A C integer literal's value (hex, octal, decimal); -1 when malformed (089)."""
    try:
        if token[:2] in ("0x", "0X"):
            return int(token, 16)
        return int(token, 8) if len(token) > 1 and token[0] == "0" else int(token)
    except ValueError:
        return -1


def _secretish(value: str) -> bool:
    """A literal that looks like a credential, not a message, a format or an environment name."""
    if _PLACEHOLDER.search(value) or re.fullmatch(r"[A-Z][A-Z0-9_]*+", value):
        return False
    has_digit = any(c.isdigit() for c in value)
    has_alpha = any(c.isalpha() for c in value)
    kinds = sum((any(c.islower() for c in value), any(c.isupper() for c in value), has_digit,
                 any(not c.isalnum() for c in value)))
    return (has_digit and has_alpha) or kinds >= 3


# ---------------------------------------------------------------------------------------------
# The scan of one file
# ---------------------------------------------------------------------------------------------

_Emit = Callable[[int, str, str], None]


def _definitions(src: _Source) -> tuple[set[str], set[str]]:
    """Functions (and function-like macros) the file defines: all, and those visible elsewhere.

    A call to a function the template defines itself (a parser's `accept()`) is not the libc
    one: in C, a definition shadows the library's. A `static` one only in its own file.
    """
    names: set[str] = set()
    exported: set[str] = set()
    if src.wat:
        return names, exported
    code = src.code
    for m in _FUNC_DEF.finditer(code) if any(n in code for n in _SHADOWABLE) else ():
        name = m.group(1)
        names.add(name)
        head = code[max(0, m.start() - 200):m.start()]
        cut = max(head.rfind(";"), head.rfind("}"), head.rfind("{"), head.rfind("\n#"))
        if not re.search(r"\bstatic\b", head[cut + 1:]):
            exported.add(name)
    for m in _MACRO_DEF.finditer(code):
        if m.group(1) in _SHADOWABLE:
            names.add(m.group(1))
            exported.add(m.group(1))
    return names, exported


def _scan_calls(src: _Source, defined: AbstractSet[str], emit: _Emit) -> None:
    """C: calls of process, dynamic-loading and socket APIs, and inline assembly."""
    code = src.code
    for m in _ASM.finditer(code) if "asm" in code else ():
        word = m.group().split("(")[0].split("{")[0].split()[0]
        emit(m.start(), "inline-asm", f"inline assembly ({word}) hides instructions (or renames a symbol) "
                                      "outside the C that reviewers and the build check; write it in plain C")
    for m in _NAME.finditer(code):
        name = m.group(m.lastgroup or 0)
        cls = _CLASS_OF_GROUP[m.lastgroup or "p"]
        if name in defined:
            continue
        before = code[max(0, m.start() - 32):m.start()]
        if name in _AMBIGUOUS:
            if _MEMBER_BEFORE.search(before):
                continue
            if _CALL_AFTER.match(code, m.end()):
                how = f"{name}()"
            elif (name in _POINTER_OK and _POINTER_BEFORE.search(before)
                  and _POINTER_AFTER.match(code, m.end())):
                how = f"{name} (as a function pointer)"
            else:
                continue
        else:
            how = f"{name}()" if _CALL_AFTER.match(code, m.end()) else f"{name} (referenced)"
        emit(m.start(), cls, f"{how} {_WHY[cls]}")
    for m in _C_IMPORT_NAME.finditer(src.nocomment) if "import_name" in src.nocomment else ():
        name, _ = _decode(m.group(1), wat=False)
        imported = _classify_import(name)
        if imported:
            emit(m.start(), imported, f'import_name("{_preview(name)}") imports a host function that '
                                      f"{_WHY[imported]}")


def _scan_wat_imports(src: _Source, emit: _Emit) -> None:
    for m in _WAT_IMPORT.finditer(src.nocomment):
        module, _ = _decode(m.group(1), wat=True)
        name, _ = _decode(m.group(2), wat=True)
        cls = _classify_import(name)
        if cls:
            emit(m.start(), cls, f'the module imports "{_preview(module)}" "{_preview(name)}", a host function '
                                 f"that {_WHY[cls]}")


def _scan_secrets(src: _Source, emit_raw: _Emit) -> None:
    """Anywhere in the raw file, comments included: a key in a comment is leaked too."""
    text = src.text
    for what, hints, rx in _SECRETS:
        if not any(h in text for h in hints):
            continue
        for m in rx.finditer(text):
            if "EXAMPLE" in m.group():
                continue
            emit_raw(m.start(), "embedded-secret",
                     f"{what} ({_redact(m.group())}) is in the source: everyone who can read the repository "
                     "or the built artifact has it; revoke it now, remove it, and give the agent credentials "
                     "at run time through a declared tool")
    lowered = text.translate(_ASCII_LOWER)
    if not any(w in lowered for w in _SECRET_WORDS):
        return
    for rx in (_SECRET_ASSIGN, _SECRET_DEFINE):
        for m in rx.finditer(lowered):
            value = text[m.start(1):m.end(1)]
            if _secretish(value):
                target = _preview(text[m.start():m.start(1)].rstrip(' \t="(:'), 40)
                emit_raw(m.start(), "embedded-secret",
                         f'a credential-like literal ("{_redact(value)}") is assigned to {target}: a secret '
                         "in the source is leaked to every reader; rotate it, remove it, and give it to the agent "
                         "at run time through a declared tool")


def _url_reason(host: str, path: str) -> str | None:
    """Why a URL's host is suspicious, or None for an ordinary name (documentation, standards)."""
    bare = host.strip("[]")
    try:
        number = re.fullmatch(r"0x[0-9a-f]++|[1-9][0-9]*+", bare)  # 0x7f000001, 2130706433
        ip = ipaddress.ip_address(int(bare, 0) if number else bare)
    except ValueError:
        ip = None
    if ip is not None:
        return None if ip.is_loopback else "a raw IP address (no name a reviewer can check; typical of " \
                                             "command-and-control)"
    if host.endswith(".onion"):
        return "a Tor hidden service"
    for domain, kind in _URL_HOSTS.items():
        d_host, _, d_path = domain.partition("/")
        if (host == d_host or host.endswith("." + d_host)) and (not d_path or path.startswith("/" + d_path)):
            return kind
    return None


def _scan_urls(src: _Source, emit: _Emit) -> None:
    """URLs in code and strings (not comments) to raw IPs, paste/file/tunnel hosts, or with credentials."""
    for m in _URL.finditer(src.nocomment) if "://" in src.nocomment else ():
        userinfo, host = m.group(1), m.group(2).lower().rstrip(".")
        if userinfo and (":" in userinfo or len(userinfo) >= 20):
            scheme = m.group().split(":", 1)[0]
            emit(m.start(), "suspicious-url", f"URL {scheme}://{_redact(userinfo)}@{_preview(host, 40)} carries "
                                              "credentials in its user part: they are leaked to every reader; "
                                              "remove them")
            continue
        reason = _url_reason(host, src.nocomment[m.end():m.end() + 64])
        if reason:
            emit(m.start(), "suspicious-url", f"URL {_preview(m.group(), 60)} points to {reason}; agents have no "
                                              "network access, so this is dead code or meant to leave the "
                                              "sandbox: remove it")


def _blob_kind(raw: str, decoded: str, escaped: int) -> str | None:
    if len(raw) < BLOB_MIN_CHARS:
        return None
    if escaped >= 0.75 * len(raw) and len(set(decoded)) >= 16:
        return f"{len(decoded)} escaped bytes"
    compact = _LINE_ESCAPES.sub("", raw)
    if len(compact) < BLOB_MIN_CHARS:
        return None
    if _HEX.fullmatch(compact) and len(set(compact.lower())) >= 10:
        return f"a hex string of {len(compact)} characters"
    if _BASE64.fullmatch(compact) and _entropy(compact) >= 4.5:
        return f"a base64 string of {len(compact)} characters"
    return None


def _hidden_word(pieces: list[str], decoded_pieces: list[tuple[str, int]], decoded: str) -> str | None:
    """A dangerous name the compiler will see in a joined literal but a reader does not: it
    spans two pieces ("sys" "tem") or is spelled with escapes ("\\x73ystem")."""
    ends: list[int] = []
    total = 0
    for d, _ in decoded_pieces:
        total += len(d)
        ends.append(total)
    literal: dict[tuple[int, str], bool] = {}
    for m in _DANGER_WORDS.finditer(decoded):
        k = bisect.bisect_right(ends, m.start())
        if k < len(ends) and m.end() > ends[k]:
            return m.group()  # crosses into the next piece
        if k < len(ends) and decoded_pieces[k][1]:  # the piece has escapes
            key = (k, m.group())
            if key not in literal:
                literal[key] = m.group() in pieces[k]
            if not literal[key]:
                return m.group()
    return None


def _scan_literals(src: _Source, emit: _Emit) -> None:
    """String literals: opaque blobs, dangerous names assembled from pieces or escapes."""
    wat = src.wat
    escape_run = _WAT_ESCAPE_RUN if wat else _C_ESCAPE_RUN
    for group in src.groups(src.strings, _WAT_GAP if wat else _C_GAP):
        pieces = [src.inner(span) for span in group]
        decoded_pieces = [_decode(p, wat) for p in pieces]
        raw = "".join(pieces)
        decoded = "".join(d for d, _ in decoded_pieces)
        escaped = sum(n for _, n in decoded_pieces)
        start = group[0][0]
        kind = _blob_kind(raw, decoded, escaped)
        if kind:
            emit(start, "encoded-blob", f"string literal holding {kind}: an opaque payload cannot be reviewed and "
                                        "may hide code or data; commit the data in readable form or generate it "
                                        "from a reviewed source (or suppress with a reason)")
        if len(pieces) > 1 or escaped:
            w = _hidden_word(pieces, decoded_pieces, decoded)
            if w:
                shown = _preview(" ".join(f'"{p}"' for p in pieces), 40)
                emit(start, "obfuscation", f'the string "{w}" is assembled from pieces or escapes '
                                           f"({shown}), a way to hide a dangerous name from review; remove it")
        for span, piece in zip(group, pieces, strict=True):
            for r in escape_run.finditer(piece) if "\\" in piece else ():
                text, _ = _decode(r.group(), wat)
                if all(" " <= ch <= "~" for ch in text):
                    emit(span[0] + 1 + r.start(), "obfuscation",
                         f'{len(text)} escaped bytes spell readable text ("{_preview(text)}"): escapes hide what '
                         "the string says; write it as plain text")
    if wat:
        return
    for group in src.groups(src.chars, _CHAR_GAP):
        if len(group) < 4:
            continue
        spelled = "".join(_decode(src.inner(span), wat=False)[0] for span in group)
        word = _DANGER_WORDS.search(spelled)
        if word:
            emit(group[0][0], "obfuscation", f'character literals spell "{word.group()}" one by one, a way to hide a '
                                             "dangerous name from review; remove it")


def _scan_obfuscation(src: _Source, defined: AbstractSet[str], emit: _Emit, emit_raw: _Emit) -> None:
    code = src.code
    for m in _BIDI.finditer(src.text):  # comments included: Trojan Source works through them
        emit_raw(m.start(), "obfuscation", f"Unicode bidirectional control U+{ord(m.group()):04X} makes the code "
                                           "display differently from how it compiles (Trojan Source, "
                                           "CVE-2021-42574); remove it")
    for m in _INVISIBLE.finditer(src.nocomment):
        if m.start() == 0 and m.group() == "\ufeff":
            continue  # a byte-order mark
        emit(m.start(), "obfuscation", f"invisible character U+{ord(m.group()):04X} in code or a string makes two "
                                       "different names or texts look the same; remove it")
    if src.wat:
        loops = [m.start() for m in re.finditer(r"\(loop\b", code)] if "i32.xor" in code else []
        for m in _WAT_XOR.finditer(code) if loops else ():
            before, after = code[max(0, m.start() - 160):m.start()], code[m.end():m.end() + 200]
            i = bisect.bisect_left(loops, m.start()) - 1
            if "store8" in before and "load8" in after and "i32.const" in after and i >= 0 \
                    and m.start() - loops[i] <= 4000:
                emit(m.start(), "obfuscation", "a loop XORs bytes in memory with a constant, the usual way to "
                                               "decode a hidden payload at run time; commit the data in clear")
        return
    for pos in src.trigraphs:
        if not src.in_comment(pos):
            emit(pos, "obfuscation", "trigraph (??x, which C11 replaces with another character) makes the code "
                                     "read differently from how it compiles; write the plain character")
    for m in _UCN.finditer(code) if "\\u" in code or "\\U" in code else ():
        emit(m.start(), "obfuscation", f"universal character name {m.group()} in an identifier hides how it is "
                                       "spelled; write the identifier in plain ASCII")
    for m in _DEFINE_ALIAS.finditer(code):
        alias, target = m.group(1), m.group(2)
        if alias == target or target in defined:
            continue
        cls = "inline-asm" if target in _ASM_WORDS else _classify(target)
        if cls:
            emit(m.start(), "obfuscation", f"#define {alias} {target} hides {target} behind another name; "
                                           "call things by their name")
            if cls != "inline-asm":  # `__asm__` in the define is already an inline-asm finding
                emit(m.start(), cls, f"{target} (through the macro {alias}) {_WHY[cls]}")
            elif target == "asm":
                emit(m.start(), cls, f"inline assembly (through the macro {alias}) hides instructions from "
                                     "review; write it in plain C")
    if "##" in code:
        for m in _PASTE_CALL.finditer(code):
            parts = [p for p in m.groups() if p]
            joined = "".join(parts)
            cls = _classify(joined)
            if cls and joined not in defined and joined not in parts:
                emit(m.start(), "obfuscation", f"token pasting builds the name {joined} from {', '.join(parts)}, "
                                               "hiding it from review; call things by their name")
                emit(m.start(), cls, f"{joined} (built by token pasting) {_WHY[cls]}")
    for m in _NUM_BRACES.finditer(code):
        values = [_c_int(v) for v in re.findall(r"0[xX][0-9A-Fa-f]+|[0-9]+", m.group(1))]
        if all(32 <= v < 127 or v == 0 for v in values):
            w = _DANGER_WORDS.search("".join(chr(v) for v in values if v))
            if w:
                emit(m.start(), "obfuscation", f'character codes in an initializer spell "{w.group()}", a way to '
                                               "hide a dangerous name from review; remove it")
    loops = [m.start() for m in _LOOP.finditer(code)] if "^" in code else []
    for m in _XOR.finditer(code) if loops else ():
        i = bisect.bisect_left(loops, m.start()) - 1
        if i >= 0 and m.start() - loops[i] <= 400:  # a for/while shortly before
            emit(m.start(), "obfuscation", "a loop XORs a byte array with a constant or a repeating key, the usual "
                                           "way to decode a hidden payload at run time; commit the data in clear "
                                           "(or suppress with a reason if this is real cryptography)")


def _scan_arrays(src: _Source, emit: _Emit) -> None:
    if src.wat:
        return
    if src.code.count(",") < ARRAY_MIN_VALUES:
        return
    for m in _NUM_RUN.finditer(src.code):
        count = m.group().count(",")
        if count < ARRAY_MIN_VALUES:
            continue
        emit(m.start(), "encoded-blob", f"an initializer of {count}+ numbers embeds a binary payload that cannot "
                                            "be reviewed; commit the data in readable form or generate it from a "
                                            "reviewed source (or suppress with a reason)")


def _suppressions(src: _Source) -> set[tuple[int, str]]:
    """(line, class) pairs allowed by a comment `agentfactory:allow <class> <reason>`."""
    allowed: set[tuple[int, str]] = set()
    for s, e in src.comments:
        if "agentfactory:allow" not in src.work[s:e]:
            continue
        for m in _ALLOW.finditer(src.work, s, e):
            reason = (m.group(2) or "").strip().removesuffix("*/").removesuffix(";)")
            if m.group(1) in CLASSES and re.search(r"[A-Za-z0-9]", reason):
                allowed.add((src.line(m.start()), m.group(1)))
    return allowed


def _scan_source(src: _Source, external: AbstractSet[str] = frozenset()) -> list[Finding]:
    found: dict[tuple[int, str], Finding] = {}

    def add(line: int, cls: str, message: str) -> None:
        key = (line, cls)
        if key not in found:
            found[key] = Finding(src.path, line, cls, CLASSES[cls], message)

    def emit(pos: int, cls: str, message: str) -> None:
        add(src.line(pos), cls, message)

    def emit_raw(pos: int, cls: str, message: str) -> None:
        add(src.raw_line(pos), cls, message)

    defined, _ = _definitions(src)
    defined |= external
    _scan_secrets(src, emit_raw)
    if src.wat:
        _scan_wat_imports(src, emit)
    else:
        _scan_calls(src, defined, emit)
    _scan_literals(src, emit)
    _scan_arrays(src, emit)
    _scan_urls(src, emit)
    _scan_obfuscation(src, defined, emit, emit_raw)
    allowed = _suppressions(src)
    return sorted((f for f in found.values() if (f.line, f.cls) not in allowed),
                  key=lambda f: (f.line, f.cls))


def scan_text(text: str, path: str) -> list[Finding]:
    """Findings in one source; `path` (posix, relative) names it and picks C or WAT by suffix."""
    return _scan_source(_Source(text, path))


# ---------------------------------------------------------------------------------------------
# The files of a template
# ---------------------------------------------------------------------------------------------

def _inside(path: Path, real_root: Path) -> Path | None:
    """The real path of a regular file inside the template folder, or None (symlinks out, loops)."""
    try:
        real = path.resolve(strict=True)
        real.relative_to(real_root)
        return real if stat.S_ISREG(real.stat().st_mode) else None
    except (OSError, RuntimeError, ValueError):
        return None


def _walk(top: Path, suffixes: frozenset[str]) -> list[Path]:
    """Files under `top` with one of `suffixes`, sorted, symbolic links last (so that a file
    reached both ways is reported under its own name); symlinked folders are not entered."""
    if top.is_symlink() or top.is_file():
        return [top] if top.suffix in suffixes else []
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
        dirnames.sort()
        out += [Path(dirpath, f) for f in sorted(filenames) if Path(f).suffix in suffixes]
    return sorted(out, key=Path.is_symlink)


def _read(path: Path, limit: int) -> bytes:
    with path.open("rb") as f:
        return f.read(limit)


def scan_template(template: Template) -> list[Finding]:
    """Findings in every source of the template: declared sources, any C/WAT file in the folder,
    vendored files under the dependencies' paths, and files pulled in by `#include`.

    Symbolic links are followed only when they stay inside the folder; reading is bounded
    (MAX_FILE_BYTES a file, MAX_SCAN_BYTES in all). Raises InputError for an unreadable file.
    """
    root = template.folder
    real_root = root.resolve()
    queue: deque[Path] = deque(root / s.path for s in template.sources)
    queue += _walk(root, SCAN_SUFFIXES)
    for dep in template.dependencies:
        queue += _walk(root / dep.path, VENDOR_SUFFIXES)
    include_dirs = [root / d for d in template.include_dirs]
    seen: set[Path] = set()
    sources: list[_Source] = []
    budget = MAX_SCAN_BYTES
    while queue and budget > 0:
        path = queue.popleft()
        real = _inside(path, real_root)
        if real is None or real in seen:
            continue
        seen.add(real)
        if path.is_relative_to(root) and ".." not in path.relative_to(root).parts:
            rel = path.relative_to(root).as_posix()
        else:  # reached through an #include with ".."
            rel = real.relative_to(real_root).as_posix()
        try:
            data = _read(real, min(MAX_FILE_BYTES, budget))
        except OSError as exc:  # fail closed: an unreadable source is not a clean one
            raise InputError(f"{root / rel}", f"cannot be read for the static checks: {exc.strerror}") from None
        budget -= len(data)
        src = _Source(data.decode("utf-8", errors="replace"), rel)
        sources.append(src)
        if not src.wat:
            for m in _INCLUDE.finditer(src.nocomment):
                dirs = ([path.parent] if m.group(1) == '"' else []) + include_dirs
                queue += [d / m.group(2) for d in dirs]  # missing ones: _inside() skips them
    exported: set[str] = set()
    for src in sources:
        exported |= _definitions(src)[1]
    findings: list[Finding] = []
    for src in sources:
        findings += _scan_source(src, exported)
    return sorted(findings, key=lambda f: (f.file, f.line, f.cls))
