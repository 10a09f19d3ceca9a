"""What a new user trips on (issue 19), through the real `agentfactory` command: exit codes that match
docs/cli.md (Ctrl-C is 130, bad input is 2 and never 70), "did you mean", a store path that is a typo or
a file, a read-only state folder, template checks that agree with the pipeline, one spelling of
`--key-provider`, `--json` where the docs promise it, and the sample inputs of examples/inputs/ giving the
decisions their README says."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from child_process import HANG_S, child_env, finish, first_line
from helpers import ROOT, TEMPLATES

from agentfactory.cli.common import EXIT_INTERNAL, EXIT_USAGE, handle_errors, os_error_message

AF = str(Path(sys.executable).with_name("agentfactory"))
INPUTS = ROOT / "examples" / "inputs"
PLACEHOLDER = "sha256:" + "0" * 64


def af(*args: str, cwd: Path | None = None, stdin: str = "", env: dict[str, str] | None = None,
       ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([AF, *args], cwd=cwd, input=stdin, capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


# --- Ctrl-C: 130 for every command, servers and commands waiting on input alike ---------------------------

def interrupt(proc: subprocess.Popen[str]) -> tuple[int, str]:
    proc.send_signal(signal.SIGINT)
    code, _, stderr = finish(proc)  # a child that ignores Ctrl-C fails here with its stacks, never hangs the run
    return code, stderr


@pytest.fixture(scope="module")
def webhook_tls(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    folder = tmp_path_factory.mktemp("tls")
    assert af("admission", "certs", "--out", str(folder)).returncode == 0
    return ["--tls-cert", str(folder / "tls.crt"), "--tls-key", str(folder / "tls.key")]


SERVERS = {"tlog": ["tlog", "serve", "--listen", "127.0.0.1:0"],
           "runtime": ["runtime", "serve", "--listen", "127.0.0.1:0"],
           "admission": ["admission", "serve", "--listen", "127.0.0.1:0"]}


@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.parametrize(("signum", "code", "delays_ms"), [(signal.SIGINT, 130, (0, 5, 15)),
                                                          (signal.SIGTERM, 0, (0,))], ids=["SIGINT", "SIGTERM"])
def test_a_server_stops_on_a_signal_sent_the_moment_it_listens(server: str, signum: int, code: int,
                                                                delays_ms: tuple[int, ...],
                                                                webhook_tls: list[str]) -> None:
    """Ctrl-C is 130 and SIGTERM a clean 0 for every server, even when the signal lands while the server is
    still starting (the delays spread it over that window): `tlog serve` used to lose a Ctrl-C there, raised
    as KeyboardInterrupt inside a callback that swallowed it, and served on (agentfactory/stopsignals.py)."""
    args = SERVERS[server] + (webhook_tls if server == "admission" else [])
    for delay in delays_ms:
        proc = subprocess.Popen([AF, *args], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                                env=child_env())
        assert "listening" in first_line(proc)
        time.sleep(delay / 1000)
        proc.send_signal(signum)
        got, _, stderr = finish(proc)
        assert got == code, f"after {delay} ms: exit {got}\n{stderr}"
        assert "Aborted!" not in stderr and "Traceback" not in stderr, stderr


def _blocked_reading_stdin(pid: int) -> bool:
    """/proc/PID/syscall: `0 0x0 …` is read(2) on file descriptor 0."""
    try:
        return Path(f"/proc/{pid}/syscall").read_text().startswith("0 0x0 ")
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/syscall").exists(), reason="needs /proc/PID/syscall (Linux)")
def test_ctrl_c_while_a_command_waits_for_input_exits_130() -> None:
    proc = subprocess.Popen([AF, "admission", "review", "-"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=child_env())
    deadline = time.monotonic() + HANG_S
    while not _blocked_reading_stdin(proc.pid):
        assert proc.poll() is None, proc.communicate()
        if time.monotonic() > deadline:  # never seen reading stdin: fail with its stacks rather than spin
            finish(proc, timeout=0)
        time.sleep(0.001)
    code, stderr = interrupt(proc)
    assert code == 130 and "Aborted!" not in stderr, stderr


# --- "did you mean" ----------------------------------------------------------------------------------------

def test_a_mistyped_command_suggests_the_closest() -> None:
    top = af("stor", "ls")
    assert top.returncode == 2 and "No such command 'stor'. Did you mean 'store'?" in top.stderr
    sub = af("store", "lss")
    assert sub.returncode == 2 and "Did you mean 'ls'?" in sub.stderr
    nothing = af("zzzzzz")
    assert nothing.returncode == 2 and "No such command 'zzzzzz'." in nothing.stderr and "mean" not in nothing.stderr


# --- the store: a typo or a file is exit 2 with the path, never "empty" or 70 ------------------------------

def test_store_paths_that_are_typos_or_files(tmp_path: Path) -> None:
    missing = af("store", "ls", "--store", f"oci-layout:{tmp_path}/does/not/exist")
    assert missing.returncode == 2, missing
    assert f"no OCI layout at {tmp_path}/does/not/exist; create it with a pipeline run" in missing.stderr
    assert "empty" not in missing.stdout
    for url in ("/etc/passwd", "oci-layout:/etc/passwd"):
        a_file = af("store", "ls", "--store", url)
        assert a_file.returncode == 2 and "/etc/passwd is a file, not a folder" in a_file.stderr, a_file
        assert "internal error" not in a_file.stderr
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    assert af("store", "get", "x", "-o", "-", "--store", str(empty_dir)).returncode == 2
    assert af("store", "copy", str(empty_dir), str(tmp_path / "dst")).returncode == 2
    fresh = af("store", "ls")  # the default store of a fresh home: nothing published yet, not a typo
    assert fresh.returncode == 0 and "The store is empty" in fresh.stdout


def test_an_os_error_about_a_path_is_exit_2_naming_it(tmp_path: Path) -> None:
    assert af("keys", "create").returncode == 0
    under_a_file = af("keys", "export", "-o", "/etc/passwd/key.pem")
    assert under_a_file.returncode == 2, under_a_file
    assert "error: /etc/passwd" in under_a_file.stderr and "a file is where a folder belongs" in under_a_file.stderr
    assert "internal error" not in under_a_file.stderr


@pytest.mark.parametrize(("exc", "code", "text"), [
    (PermissionError(13, "Permission denied", "/srv/x"), EXIT_USAGE, "/srv/x: Permission denied (check the perm"),
    (IsADirectoryError(21, "Is a directory", "/tmp"), EXIT_USAGE, "/tmp: Is a directory"),
    (OSError(30, "Read-only file system", "/ro/f"), EXIT_USAGE, "/ro/f: Read-only file system (the file system is"),
    (FileExistsError(17, "File exists", "/a", None, "/b"), EXIT_USAGE, "/a → /b: File exists"),
    (OSError(5, "Input/output error"), EXIT_INTERNAL, "internal error: OSError"),  # no path: not the user's input
])
def test_the_os_error_class(exc: OSError, code: int, text: str, capsys: pytest.CaptureFixture[str]) -> None:
    @handle_errors
    def command() -> None:
        raise exc

    with pytest.raises(SystemExit) as exited:
        command()
    assert exited.value.code == code
    assert text in capsys.readouterr().err
    assert (os_error_message(exc) is None) == (code == EXIT_INTERNAL)


# --- a read-only state folder ------------------------------------------------------------------------------

def _can_mount_read_only() -> bool:
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount --bind /tmp /tmp && mount -o remount,bind,ro /tmp"],
                           capture_output=True) if shutil.which("unshare") else None
    return probe is not None and probe.returncode == 0


@pytest.mark.skipif(not _can_mount_read_only(), reason="needs a mount namespace (unshare -m) to make a read-only "
                                                       "file system: root permissions ignore chmod")
def test_a_read_only_home_is_named_read_only(af_home: Path) -> None:
    assert af("tlog", "info").returncode == 0  # populate the log
    script = f'mount --bind "{af_home}" "{af_home}" && mount -o remount,bind,ro "{af_home}" && exec "$@"'

    def read_only(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", AF, *args], capture_output=True, text=True,
                              cwd=ROOT, env={**os.environ, "AGENTFACTORY_OSV_DB": str(af_home / "osv")})

    info = read_only("tlog", "info")
    assert info.returncode == 2, info
    assert "read-only (the file system is read-only)" in info.stderr and "not a transparency log" not in info.stderr
    for args in (("osv", "import", "examples/scanning/osv"), ("keys", "create")):
        done = read_only(*args)
        assert done.returncode == 2, (args, done)  # was 70, `internal error: OSError`
        assert f"error: {af_home}/" in done.stderr and "Read-only file system" in done.stderr, (args, done.stderr)


# --- templates: validate agrees with the pipeline; version: 1.0 says what to write -------------------------

def test_template_validate_refuses_what_the_pipeline_refuses(tmp_path: Path) -> None:
    folder = tmp_path / "other-name"
    shutil.copytree(TEMPLATES / "wordstats", folder)
    done = af("template", "validate", str(folder))
    assert done.returncode == 1
    assert ("metadata.name: 'wordstats' differs from the folder name 'other-name'; rename one so they match"
            in done.stderr)
    manifest = folder / "agent.yaml"
    manifest.write_text(re.sub(r"(?m)^  version: .*$", "  version: 1.0", manifest.read_text()))
    done = af("template", "validate", str(folder), "--json")
    [errors] = [t["errors"] for t in json.loads(done.stdout)["templates"]]
    assert any('metadata.version: 1.0 is read by YAML as a number, not a string: write a quoted semantic version '
               'like "1.0.0"' in e for e in errors), errors
    assert not any("is not of type" in e for e in errors)
    good = af("template", "validate", str(TEMPLATES / "wordstats"), "--json")
    assert good.returncode == 0 and json.loads(good.stdout)["templates"][0]["errors"] == []


# --- consistency: --key-provider everywhere, --json where promised -----------------------------------------

def test_keys_take_key_provider_and_still_provider() -> None:
    assert af("keys", "create", "--key-provider", "local").returncode == 0
    new = json.loads(af("keys", "list", "--key-provider", "local", "--json").stdout)
    old = json.loads(af("keys", "list", "--provider", "local", "--json").stdout)
    assert new == old and len(new["keys"]) == 1
    for sub in ("create", "list", "export", "rotate", "revoke"):
        text = af("keys", sub, "--help").stdout
        assert "--key-provider" in text and "--provider" not in text.replace("--key-provider", ""), sub
    bad = af("keys", "list", "--key-provider", "nope")
    assert bad.returncode == 2 and "'nope' is not one of" in bad.stderr


def test_tlog_info_reads_as_text_and_as_json() -> None:
    text = af("tlog", "info")
    assert text.returncode == 0 and re.search(r"(?m)^tree size +0$", text.stdout) and "check      ok" in text.stdout
    assert not text.stdout.lstrip().startswith("{")
    doc = json.loads(af("tlog", "info", "--json", "--check").stdout)
    assert doc["treeSize"] == 0 and doc["problems"] == [] and len(doc["logID"]) == 64


def test_template_hash_json() -> None:
    plain = af("template", "hash", str(TEMPLATES / "wordstats" / "src"))
    doc = json.loads(af("template", "hash", "--json", str(TEMPLATES / "wordstats" / "src")).stdout)
    assert doc == {"path": str(TEMPLATES / "wordstats" / "src"), "sha256": plain.stdout.strip()}
    assert re.fullmatch(r"[0-9a-f]{64}", doc["sha256"])


# --- examples/inputs: every sample gives the decision its README says --------------------------------------

def readme_rows(section: str) -> list[list[str]]:
    text = (INPUTS / "README.md").read_text()
    body = text.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in body.splitlines()
            if line.startswith("| `")]
    assert rows, section
    return rows


def test_every_shipped_input_is_in_the_readme() -> None:
    listed = {row[0].strip("`") for s in ("AdmissionReviews", "Policy inputs") for row in readme_rows(s)}
    shipped = {str(p.relative_to(INPUTS)) for p in INPUTS.rglob("*.json")}
    assert listed == shipped


@pytest.mark.parametrize("row", readme_rows("Policy inputs"), ids=lambda r: r[0].strip("`"))
def test_policy_inputs_give_the_documented_decision(row: list[str]) -> None:
    file, policy, decision = row[0].strip("`"), row[1], row[2]
    done = af("policy", "eval", "--input", str(INPUTS / file), "--policy", policy, "--json")
    assert done.returncode == (0 if decision == "allowed" else 1), done
    assert json.loads(done.stdout)["allow"] is (decision == "allowed")


def admission_review(path: Path, stdin: str = "") -> tuple[int, dict[str, object]]:
    done = af("admission", "review", "-" if stdin else str(path), stdin=stdin)
    assert done.returncode in (0, 1), done
    response = json.loads(done.stdout)["response"]
    assert response["allowed"] is (done.returncode == 0)
    return done.returncode, response


@pytest.mark.parametrize("row", readme_rows("AdmissionReviews"), ids=lambda r: r[0].strip("`"))
def test_admission_reviews_as_shipped(row: list[str]) -> None:
    file, field, decision = row[0].strip("`"), row[2].strip("`"), row[3]
    code, response = admission_review(INPUTS / file)
    assert code == (0 if decision == "allowed" else 1), response
    if decision == "denied":  # denied for the agent, in the field of its kind: the kind was understood
        message = str(response["status"]["message"])  # type: ignore[index]
        assert f'{field}: "wordstats@{PLACEHOLDER}" does not verify' in message, message


@pytest.mark.toolchain
def test_admission_reviews_with_a_published_signed_agent(repo: Path) -> None:
    built = af("pipeline", "run", "--no-tests", "--templates", "templates", cwd=repo)
    assert built.returncode == 0, built.stdout + built.stderr
    agents = json.loads(af("store", "ls", "--json", cwd=repo).stdout)["agents"]
    digest = next(a["digest"] for a in agents if a["name"] == "wordstats")
    for row in readme_rows("AdmissionReviews"):
        file, decision = row[0].strip("`"), row[4]
        text = (INPUTS / file).read_text().replace(PLACEHOLDER, digest)
        code, response = admission_review(INPUTS / file, stdin=text)
        assert code == (0 if decision == "allowed" else 1), (file, response)


def test_the_readme_names_every_os_tool_make_test_installs() -> None:
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("\nsystem-deps:", 1)[1].split("\n\n", 1)[0]
    tools = re.findall(r"command -v (\S+) ", recipe)
    assert tools and "git" in tools
    make_test = next(line + nxt for line, nxt in zip((ROOT / "README.md").read_text().splitlines(),
                                                      (ROOT / "README.md").read_text().splitlines()[1:], strict=False)
                     if line.startswith("make test"))
    assert [t for t in tools if t not in make_test] == []


def test_every_folder_inside_a_package_is_a_listed_package_with_its_data() -> None:
    """setuptools warns (40 lines on every install) and may drop a folder inside a package that is not
    listed in `packages`: every subfolder ships as a package, and its data files are declared."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages, dirs = set(config["packages"]), config.get("package-dir", {})
    data = config.get("package-data", {})
    for package in sorted(packages):
        top, _, rest = package.partition(".")
        folder = ROOT / dirs.get(top, top) / rest.replace(".", "/")
        for sub in folder.iterdir():
            if sub.is_dir() and sub.name != "__pycache__" and not sub.name.startswith("."):
                assert f"{package}.{sub.name}" in packages, f"{sub} is not in [tool.setuptools] packages"
        files = [f.name for f in folder.iterdir() if f.is_file() and f.suffix not in (".py", ".pyc", ".md")]
        for name in files:
            assert any(Path(name).match(glob) for glob in data.get(package, [])), f"{folder / name}: not package data"


# --- admission review of something that is not an AdmissionReview: the server's answer, exit 2 ------------

@pytest.mark.parametrize(("body", "uid", "needle"), [
    ('{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"abc"}}', "abc", "request.kind"),
    ("{not json", "", "not JSON"),
    ('{"apiVersion":"v1","kind":"Pod"}', "", "expected admission.k8s.io/v1"),
])
def test_admission_review_prints_the_400_answer_for_a_bad_review(body: str, uid: str, needle: str) -> None:
    done = af("admission", "review", "-", stdin=body)
    assert done.returncode == 2, done.stderr
    response = json.loads(done.stdout)["response"]
    assert response["uid"] == uid and response["allowed"] is False and response["status"]["code"] == 400
    assert needle in response["status"]["message"], response
