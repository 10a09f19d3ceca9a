"""Static source validator: each class is found on the right line, and its near misses are not.

Secrets below are assembled at run time ("AKIA" + "…") so that this file itself holds no
token-shaped string for secret scanners to trip on.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

import pytest
from helpers import EXAMPLES, TEMPLATES, dependency_yaml, hello_manifest, write_template

from agentfactory.digest import tree_sha256
from agentfactory.sourcescan import CLASSES, SEVERITIES, Finding, scan_template, scan_text
from agentfactory.template import load_template


def src(*lines: str) -> str:
    return "\n".join(lines) + "\n"


def hits(text: str, path: str = "src/main.c") -> list[tuple[int, str]]:
    return [(f.line, f.cls) for f in scan_text(text, path)]


def only(cls: str, text: str, path: str = "src/main.c") -> list[int]:
    """Lines of the findings of one class."""
    return [f.line for f in scan_text(text, path) if f.cls == cls]


AWS_KEY = "AKIA" + "Q3XJ7RZ2M5KD8WTB"
GITHUB_TOKEN = "ghp" + "_" + "aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dE3fG5"
SLACK_TOKEN = "xox" + "b-1234567890-0987654321-" + "AbCdEfGhIjKlMnOpQrSt"
GOOGLE_KEY = "AIza" + "SyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q"
PEM = "-----BEGIN " + "RSA PRIVATE KEY-----"
BLOB = base64.b64encode(b"".join(hashlib.sha256(bytes([i])).digest() for i in range(10))).decode()  # 428 chars


# --- the contract ---------------------------------------------------------------------------

def test_classes_and_severities_match_the_policy_contract() -> None:
    assert set(CLASSES) == {"inline-asm", "process-exec", "dynamic-loading", "socket", "embedded-secret",
                            "encoded-blob", "suspicious-url", "obfuscation"}
    assert set(CLASSES.values()) <= set(SEVERITIES)
    assert CLASSES["embedded-secret"] == "critical"
    assert {c for c, s in CLASSES.items() if s == "high"} == {"inline-asm", "process-exec", "dynamic-loading",
                                                               "socket"}


def test_finding_json_shape_and_validation() -> None:
    f = scan_text(src("int main(void) {", '  return system("ls");', "}"), "src/main.c")[0]
    assert f.to_json() == {"file": "src/main.c", "line": 2, "class": "process-exec", "severity": "high",
                           "message": f.message}
    assert "system() starts another program" in f.message and "spec.tools" in f.message
    with pytest.raises(ValueError, match="unknown finding class"):
        Finding("a.c", 1, "nope", "high", "x")
    with pytest.raises(ValueError, match="unknown severity"):
        Finding("a.c", 1, "socket", "severe", "x")


# --- inline-asm -----------------------------------------------------------------------------

def test_inline_asm() -> None:
    text = src("int f(void) {", "  int asm_count = 0;", '  __asm__ volatile("nop");', '  asm ("local.get 0");',
               "  return asm_count;", "}", 'extern int g(void) __asm("system");')
    assert only("inline-asm", text) == [3, 4, 7]


def test_inline_asm_near_misses() -> None:
    text = src("/* asm(\"nop\") and __asm__ */", "// asm volatile(\"x\")", 'const char *s = "asm(";',
               "int asmx(int asm_);", "struct asm_state { int asm_level; };")
    assert hits(text) == []
    assert hits(src("(module", "  ;; asm(nop) __asm__", '  (data (i32.const 0) "asm(")', ")"), "m.wat") == []


# --- process-exec ---------------------------------------------------------------------------

@pytest.mark.parametrize("line", [
    'system("rm -rf /");', 'FILE *p = popen("id", "r");', "execve(path, argv, envp);", "pid_t p = fork();",
    "posix_spawn(&pid, path, 0, 0, argv, envp);", "int (*run)(const char *) = system;", '(system)("id");',
    'WinExec("calc", 0);', "execvp(argv[0], argv);", "vfork();",
])
def test_process_exec(line: str) -> None:
    assert only("process-exec", src("#include <stdlib.h>", "void f(void) {", f"  {line}", "}")) == [3]


def test_process_exec_near_misses() -> None:
    text = src("// system(\"ls\") would run a shell", "/* popen( */", "int mysystem(int filesystem);",
               "int sys = filesystem_ok(1);", 'const char *doc = "call system() or popen()";',
               "struct cfg { int system; } c;", "int g(void) { return c.system + mysystem(1); }",
               "int execute(void);", "void forked(void);")
    assert only("process-exec", text) == []


# --- dynamic-loading ------------------------------------------------------------------------

def test_dynamic_loading() -> None:
    text = src("#include <dlfcn.h>", "void *h;", "void f(void) {", '  h = dlopen("libx.so", RTLD_NOW);',
               '  void *s = dlsym(h, "run");', '  HMODULE m = LoadLibraryA("x.dll");', "}")
    assert only("dynamic-loading", text) == [4, 5, 6]


def test_dynamic_loading_near_misses() -> None:
    text = src("/* dlopen(\"x\") is not available in WASI */", "int my_dlopen_stub(void);",
               'const char *d = "no dlsym() here";', "int dlopened = 0;")
    assert only("dynamic-loading", text) == []


# --- socket ---------------------------------------------------------------------------------

def test_socket_calls() -> None:
    text = src("#include <sys/socket.h>", "int f(int fd, struct sockaddr *a) {",
               "  int s = socket(AF_INET, SOCK_STREAM, 0);", "  connect(s, a, sizeof *a);",
               "  return __wasi_sock_accept(fd, 0, 0);", "}")
    assert only("socket", text) == [3, 4, 5]


def test_socket_import_in_c_and_wat() -> None:
    c = src('__attribute__((import_module("wasi_snapshot_preview1"), import_name("sock_send")))',
            "int quiet_send(int, const void *, int);")
    assert only("socket", c) == [1]
    wat = src("(module", '  (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32)))',
              '  (import "wasi_snapshot_preview1" "sock_open" (func $s (param i32 i32 i32) (result i32)))',
              '  (func $f (import "env" "system") (param i32))', ")")
    assert hits(wat, "src/m.wat") == [(3, "socket"), (4, "process-exec")]


def test_socket_near_misses() -> None:
    # a recursive-descent parser's own accept(), a flag named listen, a member function pointer
    text = src("struct parser { const char *s; };", "static int accept(struct parser *p, char c)",
               "{", "    return p->s[0] == c;", "}", "int listen = 0;",
               "struct ops { int (*connect)(int); } ops;",
               "int g(struct parser *p) { return accept(p, ',') + listen + ops.connect(1); }",
               'const char *help = "this tool never opens a socket() or calls connect()";',
               "// bind(fd, addr, len) is not possible here")
    assert only("socket", text) == []
    wat = src("(module", "  (func $sock_open (param i32))", '  ;; (import "wasi_snapshot_preview1" "sock_open")',
              "  (; (import \"x\" \"sock_recv\") ;)", ")")
    assert hits(wat, "m.wat") == []


# --- embedded-secret ------------------------------------------------------------------------

@pytest.mark.parametrize("secret", [AWS_KEY, GITHUB_TOKEN, SLACK_TOKEN, GOOGLE_KEY, PEM])
def test_secret_in_code_and_in_comments(secret: str) -> None:
    assert only("embedded-secret", src("int x;", f'const char *k = "{secret}";')) == [2]
    assert only("embedded-secret", src("int x;", "/* old credentials:", f"   {secret} */")) == [3]
    assert only("embedded-secret", src(";; notes", f";; {secret}", "(module)"), "m.wat") == [2]


def test_secret_message_does_not_repeat_the_secret() -> None:
    (f,) = scan_text(src(f"// {AWS_KEY}"), "a.c")
    assert AWS_KEY not in f.message and "AWS access key id" in f.message and "revoke" in f.message


def test_credential_assignments() -> None:
    text = src('static const char *db_password = "hunter2hunter2";', "#define API_TOKEN " + '"abc123def456gh"',
               'char api_key[] = "k3y-For-the-API";')
    assert only("embedded-secret", text) == [1, 2, 3]


def test_secret_near_misses() -> None:
    text = src('const char *token = "unexpected token";', 'const char *password = "%s";',
               'const char *key = "a string key";', 'const char *secret_env = "AGENT_SECRET";',
               'const char *token_kind = "identifier";', 'const char *password = "changeme123";',
               "// the AWS documentation key AKIAIOSFODNN7EXAMPLE", "int tokens = 12345678;")
    assert only("embedded-secret", text) == []


# --- encoded-blob ---------------------------------------------------------------------------

def test_base64_blob_split_over_lines() -> None:
    text = src("#include <stdio.h>", "static const char payload[] =", f'    "{BLOB[:200]}"', f'    "{BLOB[200:]}";')
    assert only("encoded-blob", text) == [3]
    assert "base64 string of 428 characters" in scan_text(text, "a.c")[0].message


def test_hex_and_escaped_blobs() -> None:
    hexed = hashlib.sha512(b"a").hexdigest() * 3  # 384 hex digits
    escaped = "".join(f"\\x{b:02x}" for b in hashlib.sha512(b"b").digest() * 2)
    assert only("encoded-blob", src(f'const char *h = "{hexed}";', f'const char *e = "{escaped}";')) == [1, 2]
    wat_escaped = "".join(f"\\{b:02x}" for b in hashlib.sha512(b"c").digest() * 2)
    assert only("encoded-blob", src("(module", "  (memory 1)", f'  (data (i32.const 0) "{wat_escaped}")', ")"),
                "m.wat") == [3]


def test_large_numeric_initializer() -> None:
    values = ", ".join(f"0x{b:02x}" for b in (hashlib.sha512(b"d").digest() * 20))
    assert only("encoded-blob", src("int x;", f"static const unsigned char bin[] = {{{values}}};")) == [2]


def test_blob_near_misses() -> None:
    table = ", ".join(f"0x{i * 7 % 256:02x}" for i in range(256))  # a 256-entry lookup table
    text = src('static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";',
               'static const char hex[] = "0123456789abcdef";', f'const char *almost = "{BLOB[:255]}";',
               f'const char *prose = "{"all work and no play makes a dull agent " * 10}";',
               f'const char *same = "{"A" * 400}";', f"static const unsigned char t[256] = {{{table}}};")
    assert only("encoded-blob", text) == []


# --- suspicious-url -------------------------------------------------------------------------

@pytest.mark.parametrize("url", [
    "http://203.0.113.7:8080/beacon", "https://pastebin.com/raw/abc", "https://abcd-12.ngrok.io/x",
    "http://exampleonionaddressxyz.onion/", "https://raw.githubusercontent.com/a/b/main/x.sh",
    "https://deploy:s3cret@example.com/", "http://3405803783/", "http://0xc6336401/x", "https://transfer.sh/x", "http://[2001:db8::1]/",
])
def test_suspicious_urls(url: str) -> None:
    assert only("suspicious-url", src("int x;", f'const char *u = "{url}";')) == [2]


def test_url_near_misses() -> None:
    text = src('const char *a = "see https://semver.org and https://www.rfc-editor.org/rfc/rfc8259";',
               "// fetched from http://198.51.100.9/ and https://pastebin.com/x, once (a comment)",
               'const char *l = "http://127.0.0.1:8080/ and http://localhost/";',
               'const char *g = "https://github.com/org/repo/blob/main/README.md";',
               'const char *m = "mailto:someone@example.com";')
    assert only("suspicious-url", text) == []


# --- obfuscation ----------------------------------------------------------------------------

@pytest.mark.parametrize("code", [
    "int t = 1 ??! 2;", '#define RUN_IT system', 'const char *n = "sys" "tem";',
    'const char *n = "\\x73\\x79\\x73\\x74\\x65\\x6d";', "char w[] = {'p', 'o', 'p', 'e', 'n', 0};",
    'const char *h = "\\x68\\x65\\x6c\\x6c\\x6f\\x20\\x77\\x6f\\x72\\x6c\\x64";',
    "int \\u0073ys = 0;", "unsigned char c[] = {115, 121, 115, 116, 101, 109, 0};",
    "void d(unsigned char *b, int n) { for (int i = 0; i < n; i++) b[i] ^= 0x5A; }",
    "void d(char *b, const char *k, int n) { for (int i = 0; i < n; i++) b[i] ^= k[i % 7]; }",
    "int ok = 1; /* \u202e } \u2066 */",
])
def test_obfuscation(code: str) -> None:
    assert only("obfuscation", src("int x;", code)) == [2]


def test_define_alias_also_reports_the_hidden_call() -> None:
    assert hits(src("#define launch system", 'int f(void) { return launch("id"); }')) == [
        (1, "obfuscation"), (1, "process-exec")]
    assert hits(src("#define CAT(a, b) a##b", 'int f(void) { return CAT(po, pen)("id", "r") != 0; }')) == [
        (2, "obfuscation"), (2, "process-exec")]


def test_obfuscation_in_wat() -> None:
    wat = src("(module", "  (memory 1)", '  (data (i32.const 0) "sock_" "open")', "  (func $d (param $p i32)",
              "    (loop $next", "      (i32.store8 (local.get $p)",
              "        (i32.xor (i32.load8_u (local.get $p)) (i32.const 90)))", "      (br $next)))", ")")
    assert only("obfuscation", wat, "m.wat") == [3, 7]


def test_obfuscation_near_misses() -> None:
    text = src('const char *q = "what? really?";', "#define inline __inline__", "#define noreturn _Noreturn",
               'const char *fs = "file" "system";', 'const char *t = "the " "system is ready";',
               'const char *ansi = "\\x1b[31m";', 'const char *utf8 = "\\xe2\\x94\\x80\\xe2\\x94\\x80\\xe2\\x94\\x80";',
               "unsigned x(unsigned a, unsigned b) { return (a & b) ^ (~a & b); }",
               "void h(unsigned char *k) { k[0] ^= 0x36; }", "int trigraph_in_comment; /* ??= */",
               "static const char alpha[] = {'a', 'b', 'c', 'd'};")
    assert only("obfuscation", text) == []


# --- comments, splices, suppression ---------------------------------------------------------

def test_multi_line_comments_are_ignored_but_code_after_them_is_not() -> None:
    text = src("/*", ' * system("ls");', " * connect(fd, a, n);", ' */ int r = system("id");', "// dlopen(x)",
               "int y; /* a */ void *h = dlopen(0, 0); /* b */")
    assert hits(text) == [(4, "process-exec"), (6, "dynamic-loading")]


def test_line_splices_are_applied_like_the_compiler() -> None:
    # `*\` newline `/` ends the comment: the compiler sees the call on line 2
    text = src("/* harmless *\\", '/ int r = system("id"); /* */', "#define M(x) \\", "    do { x; } \\",
               "    while (0)", 'int f(void) { M(popen("a", "r")); return 0; }')
    assert hits(text) == [(2, "process-exec"), (6, "process-exec")]
    # and `// \` newline continues a comment onto the next line
    assert hits(src("// note \\", 'system("id");', "int x;")) == []


def test_wat_nested_block_comments() -> None:
    wat = src("(module", "  (; outer (; inner ;) still a comment:", '     (import "env" "sock_open" (func)) ;)',
              '  (import "env" "connect" (func $c))', ")")
    assert hits(wat, "m.wat") == [(4, "socket")]


def test_suppression_needs_a_reason() -> None:
    text = src("void f(void) {",
               '  system("a"); // agentfactory:allow process-exec the build harness needs a shell',
               '  system("b"); // agentfactory:allow process-exec',
               '  system("c"); /* agentfactory:allow process-exec */',
               '  system("d"); /* agentfactory:allow process-exec runs only in the test harness */',
               '  system("e"); // agentfactory:allow socket wrong class',
               '  puts("agentfactory:allow process-exec in a string"); system("f");', "}")
    assert only("process-exec", text) == [3, 4, 6, 7]


def test_suppression_in_wat_and_of_a_secret() -> None:
    wat = src("(module", '  (import "env" "sock_open" (func)) ;; agentfactory:allow socket reviewed by sec-team',
              ")")
    assert hits(wat, "m.wat") == []
    assert hits(src(f"// {AWS_KEY} agentfactory:allow embedded-secret revoked test credential")) == []


# --- the example templates, and speed -------------------------------------------------------

@pytest.mark.parametrize("name", EXAMPLES)
def test_example_templates_have_no_blocking_findings(name: str) -> None:
    findings = scan_template(load_template(TEMPLATES / name))
    assert [f for f in findings if f.severity in ("high", "critical")] == []


def test_adversarial_inputs_finish() -> None:
    # Linear regexes: none of these may backtrack catastrophically. No time limit here: at
    # 256 KiB a quadratic pattern would already take minutes, so the suite would notice.
    unterminated = 'const char *s = "' + "a" * 200_000 + "\n" + 'int f(void) { return system("x"); }\n'
    assert only("process-exec", unterminated) == [2]
    size = 1 << 18
    for text in ('"' * size, "'" * size, "/*" * (size // 2), "f(" * (size // 2), "1," * (size // 2), "a" * size,
                 "\\\n" * (size // 2), "??=" * (size // 3), 'password = "' + "a" * size,
                 '"http://' + "a" * size, "#define " + "a" * size, "b[i] ^= 0x1;\n" * (size // 13),
                 "// agentfactory:allow socket " + " " * size + "x", ("1, " * 1023 + "x;\n") * (size // 3100)):
        assert isinstance(scan_text(text, "big.c"), list)
    assert isinstance(scan_text("(;" * (size // 2), "big.wat"), list)


def test_a_1_mib_source_is_scanned_to_the_end() -> None:
    chunk = (TEMPLATES / "jsonfmt" / "src" / "jsonfmt.c").read_text()
    body = chunk * ((1 << 20) // len(chunk))
    text = body + 'int tail(void) { return system("id"); }\n'
    assert only("process-exec", text, "src/big.c") == [body.count("\n") + 1]


# --- scan_template: which files ------------------------------------------------------------

def test_scan_template_covers_sources_headers_vendored_and_included_files(tmp_path: Path) -> None:
    files: dict[str, str | bytes] = {
        "src/main.c": src('#include "lib.h"', '#include "../data/blob.txt"', "int main(void) { return lib(); }"),
        "src/extra.h": src("int extra(void) { return fork(); }"),
        "vendor/lib/lib.h": src("int lib(void);"),
        "vendor/lib/lib.c": src('#include "lib.h"', '#include "table.inc"', "int lib(void) { return 0; }"),
        "vendor/lib/table.inc": src("0, 1,", 'dlopen("x", 0),'),
        "vendor/lib/notes.cpp": src("int n() { return socket(1, 2, 3); }"),
        "vendor/lib/README.md": src("system(\"not a source\")"),
        "data/blob.txt": src("int d = popen(0, 0) != 0;"),
    }
    folder = write_template(tmp_path, files=files, manifest=hello_manifest(
        sources="[src/main.c, vendor/lib/lib.c]", extra_spec=dependency_yaml("0" * 64, include_dirs=True)))
    (folder / "agent.yaml").write_text(hello_manifest(
        sources="[src/main.c, vendor/lib/lib.c]",
        extra_spec=dependency_yaml(tree_sha256(folder / "vendor/lib"), include_dirs=True)))
    found = {(f.file, f.line, f.cls) for f in scan_template(load_template(folder))}
    assert found == {("src/extra.h", 1, "process-exec"), ("vendor/lib/table.inc", 2, "dynamic-loading"),
                     ("vendor/lib/notes.cpp", 1, "socket"), ("data/blob.txt", 1, "process-exec")}


def test_scan_template_never_follows_symlinks_out_of_the_folder(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "evil.h").write_text('int e(void) { return system("x"); }\n')
    folder = write_template(tmp_path, files={"src/main.c": src("int main(void) { return 0; }"),
                                             "src/real.h": src("int r(void) { return fork(); }")})
    os.symlink(outside / "evil.h", folder / "src" / "link.h")
    os.symlink(outside, folder / "linked-dir")
    os.symlink("real.h", folder / "src" / "alias.h")  # inside: scanned once, under its own name
    os.symlink(folder / "nowhere.h", folder / "src" / "dangling.h")
    findings = scan_template(load_template(folder))
    assert [(f.file, f.line, f.cls) for f in findings] == [("src/real.h", 1, "process-exec")]


def test_scan_template_wat(tmp_path: Path) -> None:
    wat = src("(module", '  (import "wasi_snapshot_preview1" "sock_accept" (func (param i32 i32 i32) (result i32)))',
              '  (func (export "_start")))')
    folder = write_template(tmp_path, files={"src/main.wat": wat},
                            manifest=hello_manifest(sources="[src/main.wat]", language="wat"))
    assert [f.to_json() for f in scan_template(load_template(folder))] == [{
        "file": "src/main.wat", "line": 2, "class": "socket", "severity": "high",
        "message": scan_text(wat, "src/main.wat")[0].message}]


@pytest.mark.parametrize(("storage", "lines"), [("", []), ("static ", [1, 2])])
def test_own_definition_in_another_file(tmp_path: Path, storage: str, lines: list[int]) -> None:
    # a parser's accept() defined in parse.c is the one main.c calls, unless it is static there
    files: dict[str, str | bytes] = {
        "src/parse.c": src("struct p { const char *s; };", f"{storage}int accept(struct p *p, char c)",
                           "{ return p->s[0] == c; }"),
        "src/main.c": src("struct p; int accept(struct p *p, char c);",
                          "int main(void) { return accept(0, 'x'); }"),
    }
    folder = write_template(tmp_path, files=files,
                            manifest=hello_manifest(sources="[src/main.c, src/parse.c]"))
    assert [(f.file, f.line, f.cls) for f in scan_template(load_template(folder))] == [
        ("src/main.c", line, "socket") for line in lines]
