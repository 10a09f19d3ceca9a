"""The GitHub Actions workflows (.github/workflows, docs/ci.md): valid against the workflow schema, least
privilege, every action pinned by commit, no expression interpolated into a shell script, and every
`agentfactory` command they run exists with the options they give it. The shell steps with logic are run
here too, against stand-ins for agentfactory, git and gh."""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from helpers import ROOT

WORKFLOWS = ROOT / ".github" / "workflows"
NAMES = ("pr.yml", "release.yml", "promote.yml", "rescan.yml")
SCHEMA = ROOT / "tests" / "fixtures" / "github-actions" / "github-workflow.json"
EXE = Path(sys.executable).with_name("agentfactory")
# Few third-party actions, all GitHub's own (docs/ci.md, "Pinned actions").
ALLOWED_ACTIONS = {"actions/checkout", "actions/setup-python", "actions/cache", "actions/upload-artifact",
                   "actions/download-artifact", "github/codeql-action/upload-sarif"}
# Subcommands the workflows were written against before they landed: only these may be missing (skipped, said why).
PENDING = {"ci": "`agentfactory ci check [--base REF]` is not installed here; its options are checked once it is"}
SHA = re.compile(r"^[0-9a-f]{40}$")
JQ = shutil.which("jq")
BASH = shutil.which("bash")


# --- reading workflows --------------------------------------------------------------------------------

def parse(text: str) -> dict[str, Any]:
    """A workflow as GitHub reads it. PyYAML speaks YAML 1.1, where the key `on` is the boolean True."""
    doc = yaml.safe_load(text)
    assert isinstance(doc, dict)
    if True in doc:
        doc["on"] = doc.pop(True)
    return doc


@functools.cache
def text_of(name: str) -> str:
    return (WORKFLOWS / name).read_text()


def workflow(name: str) -> dict[str, Any]:
    return parse(text_of(name))


def steps(wf: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for job in wf.get("jobs", {}).values() for s in job.get("steps", [])]


def runs(wf: dict[str, Any]) -> list[str]:
    return [s["run"] for s in steps(wf) if "run" in s]


def step_named(wf: dict[str, Any], name: str) -> dict[str, Any]:
    found = [s for s in steps(wf) if s.get("name") == name]
    assert len(found) == 1, f"no single step named {name!r}"
    return found[0]


# --- the checks, as functions the negative tests feed broken copies to ---------------------------------

def permission_problems(wf: dict[str, Any]) -> list[str]:
    """Top-level `permissions` must be given (GitHub's default may be read-write), and nothing may be write-all."""
    problems = []
    if "permissions" not in wf:
        problems.append("no top-level permissions: the token gets the repository's default scopes")
    scopes = [("workflow", wf.get("permissions"))]
    scopes += [(f"job {j}", job.get("permissions")) for j, job in wf.get("jobs", {}).items()]
    for where, perms in scopes:
        if perms == "write-all" or (isinstance(perms, dict) and "write-all" in perms.values()):
            problems.append(f"{where}: permissions write-all")
    return problems


def unpinned_actions(wf: dict[str, Any]) -> list[str]:
    """Every `uses:` of another repository must name a full 40-hex commit, not a tag or a branch."""
    problems = []
    uses = [s["uses"] for s in steps(wf) if "uses" in s]
    uses += [job["uses"] for job in wf.get("jobs", {}).values() if "uses" in job]
    for ref in uses:
        if ref.startswith("./"):
            continue
        if ref.startswith("docker://"):
            if "@sha256:" not in ref:
                problems.append(f"{ref}: a container action not pinned by digest")
            continue
        _, _, version = ref.partition("@")
        if not SHA.match(version):
            problems.append(f"{ref}: not pinned to a 40-hex commit")
    return problems


def pin_comment_problems(text: str) -> list[str]:
    """Each pinned `uses:` line says which release the commit is: `# vX.Y.Z`."""
    problems = []
    for n, line in enumerate(text.splitlines(), 1):
        m = re.match(r"^\s*(?:-\s+)?uses:\s*(\S+)(.*)$", line)
        if m and not m.group(1).startswith("./") and not re.fullmatch(r"\s+#\s*v\d+\.\d+\.\d+\s*", m.group(2)):
            problems.append(f"line {n}: {m.group(1)} has no '# vX.Y.Z' comment")
    return problems


def concurrency_problems(wf: dict[str, Any], cancel: bool) -> list[str]:
    c = wf.get("concurrency")
    if not isinstance(c, dict) or not c.get("group"):
        return ["no top-level concurrency group"]
    if c.get("cancel-in-progress", False) is not cancel:
        return [f"cancel-in-progress should be {str(cancel).lower()}"]
    return []


def injection_problems(wf: dict[str, Any]) -> list[str]:
    """No `${{ github.event… }}` (text an outsider controls) interpolated into a shell script."""
    return [f"run: {r[:60]!r}…" for r in runs(wf) if re.search(r"\$\{\{\s*github\.event", r)]


def expressions_in_run(wf: dict[str, Any]) -> list[str]:
    """Stricter, our own rule: no expression at all in a shell script; values go through `env:`."""
    return [f"run: {r[:60]!r}…" for r in runs(wf) if "${{" in r]


# --- agentfactory invocations --------------------------------------------------------------------------

_AT_COMMAND = re.compile(r"(?:^|[;&|(!]|\b(?:then|do|else|elif|if)\b)\s*agentfactory\s+(?P<rest>.*)$")
_OPERATORS = set(";&|()<>")


def logical_lines(script: str) -> list[str]:
    """Lines of a shell script with continuations joined and comment lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", script)
    return [line for line in joined.splitlines() if not line.lstrip().startswith("#")]


def invocations_in(script: str) -> list[list[str]]:
    """The words of each `agentfactory …` command in a script, up to the next shell operator."""
    found = []
    for line in logical_lines(script):
        for m in _AT_COMMAND.finditer(line):
            lex = shlex.shlex(m.group("rest"), posix=True, punctuation_chars=True)
            lex.whitespace_split = True
            words = []
            for token in lex:
                if token and set(token) <= _OPERATORS:
                    break
                words.append(token)
            found.append(words)
    return found


def all_invocations() -> list[tuple[str, list[str]]]:
    return [(name, words) for name in NAMES for script in runs(workflow(name)) for words in invocations_in(script)]


@functools.cache
def help_text(*command: str) -> tuple[int, str]:
    done = subprocess.run([str(EXE), *command, "--help"], capture_output=True, text=True, timeout=60)
    return done.returncode, done.stdout + done.stderr


def resolve(words: list[str]) -> tuple[list[str], str]:
    """(the command path, e.g. ['pipeline', 'run'], and its --help text); pytest.skip for pending ones."""
    command = [words[0]]
    code, text = help_text(*command)
    if code != 0:
        if "No such command" in text and words[0] in PENDING:
            pytest.skip(PENDING[words[0]])
        pytest.fail(f"agentfactory {words[0]}: {text.strip()}")
    if "Commands:" in text:
        assert len(words) > 1 and not words[1].startswith("-"), f"agentfactory {words[0]} needs a subcommand"
        command.append(words[1])
        code, text = help_text(*command)
        if code != 0:
            pytest.fail(f"agentfactory {' '.join(command)}: {text.strip()}")
    return command, text


INVOCATIONS = all_invocations()


# --- the files -----------------------------------------------------------------------------------------

def test_the_workflows_folder_holds_these_workflows_only() -> None:
    found = sorted(p.name for p in WORKFLOWS.iterdir() if p.suffix in (".yml", ".yaml"))
    assert found == sorted(NAMES)


@functools.cache
def validator() -> jsonschema.Draft7Validator:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


@pytest.mark.parametrize("name", NAMES)
def test_valid_against_the_workflow_schema(name: str) -> None:
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator().iter_errors(workflow(name))]
    assert errors == []


def test_the_schema_refuses_a_broken_workflow() -> None:
    wf = workflow("pr.yml")
    broken = copy.deepcopy(wf)
    del broken["jobs"]["check"]["runs-on"]
    assert list(validator().iter_errors(broken))
    assert list(validator().iter_errors({**wf, "permissions": {"contents": "admin"}}))


@pytest.mark.parametrize("name", NAMES)
def test_least_privilege(name: str) -> None:
    wf = workflow(name)
    assert permission_problems(wf) == []
    assert wf["permissions"] == {"contents": "read"}


@pytest.mark.parametrize("name", NAMES)
def test_actions_pinned_by_commit_with_their_version(name: str) -> None:
    wf = workflow(name)
    assert unpinned_actions(wf) == []
    assert pin_comment_problems(text_of(name)) == []
    used = {s["uses"].partition("@")[0] for s in steps(wf) if "uses" in s}
    assert used <= ALLOWED_ACTIONS


def test_one_commit_per_action_across_workflows() -> None:
    pins: dict[str, set[str]] = {}
    for name in NAMES:
        for line in text_of(name).splitlines():
            if m := re.match(r"^\s*(?:-\s+)?uses:\s*([^@\s]+)@(\S+)\s+#\s*(\S+)", line):
                pins.setdefault(m.group(1), set()).add(f"{m.group(2)} {m.group(3)}")
    assert {action: len(p) for action, p in pins.items()} == dict.fromkeys(pins, 1), pins


def test_docs_name_the_pins_and_the_required_check() -> None:
    docs = (ROOT / "docs" / "ci.md").read_text()
    for name in NAMES:
        for m in re.finditer(r"uses:\s*([^@\s]+)@([0-9a-f]{40})\s+#\s*(v\S+)", text_of(name)):
            assert f"| `{m.group(1)}` | `{m.group(2)}` | {m.group(3)} |" in docs, m.group(0)
    assert workflow("pr.yml")["jobs"]["check"]["name"] == "ci check"
    assert "**`ci check`**" in docs


@pytest.mark.parametrize(("name", "cancel"), [("pr.yml", True), ("release.yml", False), ("promote.yml", False),
                                              ("rescan.yml", False)])
def test_concurrency(name: str, cancel: bool) -> None:
    wf = workflow(name)
    assert concurrency_problems(wf, cancel) == []
    group = wf["concurrency"]["group"]
    assert group == {"pr.yml": "pr-${{ github.event.pull_request.number }}", "release.yml": "release",
                     "promote.yml": "promote", "rescan.yml": "rescan"}[name]


@pytest.mark.parametrize("name", NAMES)
def test_no_expression_in_shell_scripts(name: str) -> None:
    wf = workflow(name)
    assert injection_problems(wf) == []
    assert expressions_in_run(wf) == []


@pytest.mark.parametrize("name", NAMES)
def test_shell_scripts_parse_and_run_under_pipefail(name: str) -> None:
    if BASH is None:
        pytest.skip("bash is not installed")
    wf = workflow(name)
    assert wf["defaults"]["run"]["shell"] == "bash"  # bash --noprofile --norc -eo pipefail on the runner
    for script in runs(wf):
        done = subprocess.run([BASH, "-n"], input=script, capture_output=True, text=True)
        assert done.returncode == 0, f"{script[:80]!r}: {done.stderr}"


# --- what each workflow does ---------------------------------------------------------------------------

def test_pr_runs_on_template_policy_and_pipeline_changes() -> None:
    wf = workflow("pr.yml")
    assert set(wf["on"]) == {"pull_request"}
    assert set(wf["on"]["pull_request"]["paths"]) == {"templates/**", "policies/**", "pipelines/**",
                                                      "agentfactory/**", "pyproject.toml",
                                                      ".github/workflows/pr.yml"}


def test_pr_checks_out_full_history_and_runs_ci_check_against_the_base() -> None:
    wf = workflow("pr.yml")
    job = wf["jobs"]["check"]
    assert "permissions" not in job  # contents: read from the top, nothing more
    checkout = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/checkout@"))
    assert checkout["with"]["fetch-depth"] == 0
    assert checkout["with"]["persist-credentials"] is False
    check = step_named(wf, "Check the changed templates")
    assert check["run"] == 'agentfactory ci check --base "origin/$BASE_REF"'
    assert check["env"]["BASE_REF"] == "${{ github.base_ref }}"
    py = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/setup-python@"))
    assert py["with"]["python-version"] == "3.11"
    assert "python -m pip install -e ." in runs(wf)


@pytest.mark.parametrize("name", ["pr.yml", "release.yml"])
def test_the_osv_database_is_imported_once_from_every_ecosystem(name: str) -> None:
    wf = workflow(name)
    assert wf["env"]["OSV_ECOSYSTEMS"].split() == ["npm", "PyPI", "crates.io", "Go"]
    script = step_named(wf, "Import the OSV database")["run"]
    loop = script[script.index("for ecosystem"):script.index("done")]
    assert "https://osv-vulnerabilities.storage.googleapis.com/$ecosystem/all.zip" in loop
    assert '--output "$export_dir/$ecosystem-all.zip"' in loop
    # `osv import` replaces the database: one import of the folder holding every zip, after the loop.
    assert "osv import" not in loop
    assert invocations_in(script) == [["osv", "import", "$export_dir"]]
    cache = step_named(wf, "Cache the OSV database")
    assert step_named(wf, "Import the OSV database")["if"] == "steps.osv-cache.outputs.cache-hit != 'true'"
    assert cache["with"]["key"] == "${{ steps.osv-key.outputs.key }}"
    assert set(cache["with"]["path"].split()) == {".agentfactory/osv", ".agentfactory/cache/osv"}


def test_pr_and_release_import_the_same_database() -> None:
    for step in ("OSV cache key (one database per UTC day)", "Cache the OSV database", "Import the OSV database",
                 "Cache the WASI toolchain"):
        assert step_named(workflow("pr.yml"), step) == step_named(workflow("release.yml"), step)


def test_release_signs_keylessly_and_publishes_to_ghcr() -> None:
    wf = workflow("release.yml")
    assert set(wf["on"]) == {"push", "workflow_dispatch"}
    assert wf["on"]["push"]["branches"] == ["main"]
    publish = wf["jobs"]["publish"]
    assert publish["permissions"] == {"contents": "read", "id-token": "write", "packages": "write"}
    script = step_named(wf, "Build, test, scan, sign and publish")["run"]
    [words] = invocations_in(script)
    assert words[:2] == ["pipeline", "run"]
    command = " ".join(logical_lines(script))
    for option in ("--key-provider sigstore", "--tlog none", "--sbom-root .", '--store "$AGENTFACTORY_STORE"',
                   '--builder-id "https://github.com/$GITHUB_WORKFLOW_REF"'):
        assert option in command, option
    store = step_named(wf, "The artifact store (GHCR)")["run"]
    assert "oci://ghcr.io/${GITHUB_REPOSITORY_OWNER,,}/agents" in store
    env = step_named(wf, "Build, test, scan, sign and publish")["env"]
    assert env == {"AGENTFACTORY_REGISTRY_USERNAME": "${{ github.actor }}",
                   "AGENTFACTORY_REGISTRY_PASSWORD": "${{ secrets.GITHUB_TOKEN }}"}
    upload = step_named(wf, "Upload the SBOMs")
    assert upload["uses"].startswith("actions/upload-artifact@") and upload["with"]["path"] == "sbom/"


def test_release_promotes_to_dev_through_pull_requests_in_a_job_that_cannot_sign() -> None:
    wf = workflow("release.yml")
    job = wf["jobs"]["promote-dev"]
    assert job["needs"] == "publish"
    assert job["permissions"] == {"contents": "write", "pull-requests": "write", "packages": "read"}
    script = step_named(wf, "Promote each new version to dev, one pull request each")["run"]
    [words] = invocations_in(script)
    assert words[:4] == ["promote", "$ref", "--to", "dev"] and "--push" in words
    assert words[words.index("--branch") + 1] == "$branch"
    assert 'branch="promote/dev/$name-$version"' in script
    assert "gh pr create" in script
    assert wf["env"]["AGENTFACTORY_TRUST_POLICY"] == "trust-policy.yaml"


def test_promote_runs_hourly_and_by_hand() -> None:
    wf = workflow("promote.yml")
    assert wf["on"]["schedule"] == [{"cron": "17 * * * *"}]
    inputs = wf["on"]["workflow_dispatch"]["inputs"]
    assert set(inputs) == {"agent", "to-stage", "window"}
    assert inputs["to-stage"]["options"] == ["prod", "canary"]
    [job] = wf["jobs"].values()
    assert job["permissions"] == {"contents": "write", "packages": "read"}
    promote = step_named(wf, "Promote")
    assert promote["env"]["PROMETHEUS_URL"] == "${{ secrets.PROMETHEUS_URL }}"
    commands = invocations_in(promote["run"])
    prod = next(w for w in commands if w[:4] == ["promote", "$agent", "--to", "prod"])
    assert prod[prod.index("--analyze") + 1] == "$WINDOW"
    assert prod[prod.index("--prometheus") + 1] == "$PROMETHEUS_URL"
    assert all("--push" in w for w in commands if w[0] == "promote")


def test_rescan_attests_every_agent_on_a_schedule() -> None:
    """rescan.yml (docs/scanning.md): a fresh OSV database, then `scan --attest --keyless` per agent."""
    wf = workflow("rescan.yml")
    assert set(wf["on"]) == {"schedule", "workflow_dispatch"}
    assert wf["on"]["schedule"] == [{"cron": "41 */6 * * *"}]  # well inside prod's 24 h maximum scan age
    [job] = wf["jobs"].values()
    assert job["permissions"] == {"contents": "read", "id-token": "write", "packages": "write"}
    checkout = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/checkout@"))
    assert checkout["with"]["persist-credentials"] is False
    assert not any(s.get("uses", "").startswith("actions/cache@") for s in job["steps"])  # never a stale database
    assert invocations_in(step_named(wf, "Import the OSV database")["run"]) == [["osv", "import", "$export_dir"]]
    script = step_named(wf, "Re-scan and attest every agent")["run"]
    assert invocations_in(script) == [
        ["store", "ls", "--store", "$AGENTFACTORY_STORE", "--json"],
        ["scan", "$ref", "--attest", "--keyless", "--store", "$AGENTFACTORY_STORE", "--json"]]
    assert wf["env"]["AGENTFACTORY_TRUST_POLICY"] == "trust-policy.yaml"


def test_rescan_step_reports_each_agent_and_fails_only_when_a_scan_could_not_run(stubs: Path) -> None:
    (stubs / "store.json").write_text(json.dumps({"store": "oci://ghcr.io/example/agents", "agents": [
        {"name": "wordstats", "version": "1.0.0", "digest": "sha256:aa"},
        {"name": "htmlpage", "version": "1.0.0", "digest": "sha256:bb"},
        {"name": "jsonfmt", "version": "1.0.0", "digest": "sha256:cc"}]}))
    (stubs / "scan-htmlpage.rc").write_text("1")
    script = step_named(workflow("rescan.yml"), "Re-scan and attest every agent")["run"]
    code, log, _, summary = run_step(stubs, script, {})
    assert code == 0, log  # a blocking re-scan is evidence, attested: not a failure of the run
    assert [c for c in calls(stubs) if c.startswith("scan ")] == [
        f"scan {ref} --attest --keyless --store oci://ghcr.io/example/agents --json"
        for ref in ("wordstats@sha256:aa", "htmlpage@sha256:bb", "jsonfmt@sha256:cc")]
    assert "::warning::htmlpage@sha256:bb: the re-scan blocks it (attested)" in log
    assert "| `htmlpage@sha256:bb` | blocked |" in summary and "| `jsonfmt@sha256:cc` | passed |" in summary
    (stubs / "scan-jsonfmt.rc").write_text("2")
    code, log, _, summary = run_step(stubs, script, {})
    assert code == 1 and "::error::jsonfmt@sha256:cc: the re-scan could not run (exit 2)" in log
    assert "| `jsonfmt@sha256:cc` | error (exit 2) |" in summary


@pytest.mark.parametrize(("name", "words"), INVOCATIONS,
                         ids=[f"{n}:{' '.join(w[:2])}:{i}" for i, (n, w) in enumerate(INVOCATIONS)])
def test_agentfactory_commands_and_options_exist(name: str, words: list[str]) -> None:
    assert missing_options(words) == [], name


def missing_options(words: list[str]) -> list[str]:
    """The long options in `words` that the command's --help does not list."""
    command, text = resolve(words)
    options = [w.split("=", 1)[0] for w in words[len(command):] if w.startswith("--")]
    return [o for o in options if not re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", text)]


def test_the_workflows_call_these_commands() -> None:
    called = {" ".join(w[:2]) if w[0] in ("pipeline", "osv", "ci", "policy") else w[0] for _, w in INVOCATIONS}
    assert called == {"ci check", "osv import", "policy test", "pipeline run", "promote", "status", "store", "scan"}


# --- the checks catch what they are for ----------------------------------------------------------------

def test_an_unpinned_action_is_caught() -> None:
    wf = workflow("pr.yml")
    for ref in ("actions/checkout@v4", "actions/checkout@main", "actions/checkout@11bd719",
                "docker://alpine:3.20"):
        broken = copy.deepcopy(wf)
        broken["jobs"]["check"]["steps"][0]["uses"] = ref
        assert unpinned_actions(broken) == [f"{ref}: " + ("a container action not pinned by digest"
                                                           if ref.startswith("docker") else
                                                           "not pinned to a 40-hex commit")]
    text = text_of("pr.yml").replace("@11bd71901bbe5b1630ceea73d27597364c9af683 # v4.2.2", "@v4", 1)
    assert unpinned_actions(parse(text)) and pin_comment_problems(text)
    assert pin_comment_problems(text_of("pr.yml").replace(" # v4.2.2", "", 1))


def test_missing_or_write_all_permissions_are_caught() -> None:
    wf = workflow("release.yml")
    assert permission_problems({k: v for k, v in wf.items() if k != "permissions"}) == [
        "no top-level permissions: the token gets the repository's default scopes"]
    assert permission_problems({**wf, "permissions": "write-all"}) == ["workflow: permissions write-all"]
    broken = copy.deepcopy(wf)
    broken["jobs"]["publish"]["permissions"] = "write-all"
    assert permission_problems(broken) == ["job publish: permissions write-all"]


def test_missing_concurrency_is_caught() -> None:
    wf = workflow("promote.yml")
    assert concurrency_problems({k: v for k, v in wf.items() if k != "concurrency"}, False)
    assert concurrency_problems({**wf, "concurrency": {"group": "promote", "cancel-in-progress": True}}, False)


def test_an_event_interpolated_into_a_script_is_caught() -> None:
    wf = workflow("pr.yml")
    broken = copy.deepcopy(wf)
    step_named(broken, "Check the changed templates")["run"] = 'echo "${{ github.event.pull_request.title }}"'
    assert injection_problems(broken) and expressions_in_run(broken)


def test_an_unknown_command_or_option_is_caught() -> None:
    assert missing_options(["pipeline", "run", "--no-such-option", "--json", "--key-provider=local"]) == [
        "--no-such-option"]
    assert missing_options(["promote", "x", "--to", "dev", "--analyse", "5m"]) == ["--analyse"]
    with pytest.raises(pytest.fail.Exception, match="No such command"):
        resolve(["no-such-command"])
    with pytest.raises(pytest.fail.Exception, match="No such command"):
        resolve(["osv", "export"])


def test_the_invocation_parser() -> None:
    script = ('x=1; agentfactory promote "$a" --to prod \\\n  --push --json > "$out" || rc=$?\n'
              "# agentfactory keys rotate --in-a-comment\n"
              'echo "::error::agentfactory is not a command here"\n'
              "if ! agentfactory ci check --base=origin/main; then exit 1; fi\n")
    assert invocations_in(script) == [["promote", "$a", "--to", "prod", "--push", "--json"],
                                      ["ci", "check", "--base=origin/main"]]


# --- the shell logic, run against stand-ins --------------------------------------------------------------

STUB_AGENTFACTORY = """#!/usr/bin/env bash
# agentfactory as the workflows see it: canned answers from $STUBS, every call logged.
echo "$*" >> "$STUBS/calls.log"
case "$1" in
  status) cat "$STUBS/status.json" ;;
  store) cat "$STUBS/store.json" ;;
  scan) agent="${2%%@*}"; echo '{}'; exit "$(cat "$STUBS/scan-$agent.rc" 2> /dev/null || echo 0)" ;;
  pipeline) cat "$STUBS/pipeline.json"; exit "$(cat "$STUBS/pipeline.rc")" ;;
  promote)
    agent="${2%%:*}"
    if [ -f "$STUBS/promote-$agent.json" ]; then cat "$STUBS/promote-$agent.json"; fi
    exit "$(cat "$STUBS/promote-$agent.rc" 2> /dev/null || echo 0)" ;;
esac
"""
STUB_LOGGER = '#!/usr/bin/env bash\necho "$(basename "$0") $*" >> "$STUBS/calls.log"\n'
STUB_GIT = STUB_LOGGER + """# ls-remote --exit-code: 0 when $STUBS/remote-branches lists the branch, else 2
if [ "$1" = ls-remote ]; then grep -qxF -- "${@: -1}" "$STUBS/remote-branches" 2> /dev/null || exit 2; fi
"""


@pytest.fixture
def stubs(tmp_path: Path) -> Path:
    if BASH is None or JQ is None:
        pytest.skip("the workflows' shell steps need bash and jq (preinstalled on GitHub's runners)")
    folder = tmp_path / "stubs"
    (folder / "bin").mkdir(parents=True)
    for name, body in (("agentfactory", STUB_AGENTFACTORY), ("git", STUB_GIT), ("gh", STUB_LOGGER)):
        (folder / "bin" / name).write_text(body)
        (folder / "bin" / name).chmod(0o755)
    (folder / "calls.log").write_text("")
    return folder


def run_step(stubs: Path, script: str, env: dict[str, str]) -> tuple[int, str, dict[str, str], str]:
    """Run a step's script as the runner does; (exit code, output, $GITHUB_OUTPUT, $GITHUB_STEP_SUMMARY)."""
    runner = stubs / "runner"
    runner.mkdir(exist_ok=True)
    files = {k: runner / k.lower() for k in ("GITHUB_OUTPUT", "GITHUB_STEP_SUMMARY", "GITHUB_ENV")}
    for f in files.values():
        f.write_text("")
    full = {"PATH": f"{stubs / 'bin'}{os.pathsep}{os.environ['PATH']}", "STUBS": str(stubs),
            "RUNNER_TEMP": str(runner), "GITHUB_RUN_ID": "42", "GITHUB_REF_NAME": "main",
            "GITHUB_SERVER_URL": "https://github.com", "GITHUB_REPOSITORY": "Example/agents",
            "GITHUB_REPOSITORY_OWNER": "Example", "GITHUB_WORKFLOW_REF":
            "Example/agents/.github/workflows/release.yml@refs/heads/main",
            "AGENTFACTORY_STORE": "oci://ghcr.io/example/agents", **{k: str(v) for k, v in files.items()}, **env}
    done = subprocess.run([str(BASH), "--noprofile", "--norc", "-eo", "pipefail", "-c", script], env=full,
                          capture_output=True, text=True, timeout=60)
    outputs = dict(line.split("=", 1) for line in files["GITHUB_OUTPUT"].read_text().splitlines())
    return done.returncode, done.stdout + done.stderr, outputs, files["GITHUB_STEP_SUMMARY"].read_text()


def calls(stubs: Path) -> list[str]:
    return (stubs / "calls.log").read_text().splitlines()


def test_publish_step_reports_what_was_built(stubs: Path) -> None:
    report = {"templates": [
        {"name": "wordstats", "version": "1.1.0", "status": "built", "digest": "sha256:aa", "errors": []},
        {"name": "jsonfmt", "version": "1.0.0", "status": "unchanged", "digest": "sha256:bb", "errors": []},
        {"name": "broken", "version": "0.1.0", "status": "failed", "digest": None,
         "errors": ["templates/broken/agent.yaml:4: spec.tools: shell.exec is not allowed"]}]}
    (stubs / "pipeline.json").write_text(json.dumps(report))
    (stubs / "pipeline.rc").write_text("1")
    script = step_named(workflow("release.yml"), "Build, test, scan, sign and publish")["run"]
    code, log, outputs, summary = run_step(stubs, script, {})
    assert code == 0, log  # the step records the exit code; a later step fails the job
    assert outputs == {"built": '["wordstats:1.1.0"]', "rc": "1"}
    assert "| wordstats | 1.1.0 | built | `sha256:aa` |" in summary
    assert "**broken failed:**\n- templates/broken/agent.yaml:4: spec.tools: shell.exec is not allowed" in summary
    assert calls(stubs) == ["pipeline run --key-provider sigstore --tlog none --builder-id "
                            "https://github.com/Example/agents/.github/workflows/release.yml@refs/heads/main "
                            "--sbom-root . --store oci://ghcr.io/example/agents --json"]


def test_publish_step_survives_a_pipeline_that_printed_nothing(stubs: Path) -> None:
    (stubs / "pipeline.json").write_text("")
    (stubs / "pipeline.rc").write_text("2")
    script = step_named(workflow("release.yml"), "Build, test, scan, sign and publish")["run"]
    code, log, outputs, _ = run_step(stubs, script, {})
    assert code == 0, log
    assert outputs == {"built": "[]", "rc": "2"}


def test_the_store_is_named_in_lower_case(stubs: Path) -> None:
    script = step_named(workflow("release.yml"), "The artifact store (GHCR)")["run"]
    code, log, _, _ = run_step(stubs, script, {})
    assert code == 0, log
    assert (stubs / "runner" / "github_env").read_text() == "AGENTFACTORY_STORE=oci://ghcr.io/example/agents\n"


def test_release_opens_a_pull_request_per_promoted_version(stubs: Path) -> None:
    (stubs / "promote-wordstats.json").write_text(json.dumps(
        {"action": "promoted", "agent": "wordstats", "stage": "dev", "digest": "sha256:aa", "commit": "c0ffee",
         "branch": "promote/dev/wordstats-1.1.0", "reasons": []}))
    (stubs / "promote-jsonfmt.json").write_text(json.dumps({"action": "unchanged", "digest": "sha256:bb"}))
    (stubs / "remote-branches").write_text("promote/dev/base64-2.0.0\n")  # proposed by an earlier run
    script = step_named(workflow("release.yml"), "Promote each new version to dev, one pull request each")["run"]
    code, log, _, _ = run_step(stubs, script, {"BUILT": '["wordstats:1.1.0","jsonfmt:1.0.0","base64:2.0.0"]'})
    assert code == 0, log
    assert calls(stubs) == [
        "git ls-remote --exit-code --heads origin promote/dev/wordstats-1.1.0",
        "git pull --ff-only --quiet",
        "promote wordstats:1.1.0 --to dev --branch promote/dev/wordstats-1.1.0 --push "
        "--store oci://ghcr.io/example/agents --json",
        f"gh pr create --base main --head promote/dev/wordstats-1.1.0 --title promote wordstats 1.1.0 to dev "
        f"--body-file {stubs / 'runner' / 'pr-wordstats.md'}",
        "git ls-remote --exit-code --heads origin promote/dev/jsonfmt-1.0.0",
        "git pull --ff-only --quiet",
        "promote jsonfmt:1.0.0 --to dev --branch promote/dev/jsonfmt-1.0.0 --push "
        "--store oci://ghcr.io/example/agents --json",
        "git ls-remote --exit-code --heads origin promote/dev/base64-2.0.0"]
    assert "::notice::base64 2.0.0: promote/dev/base64-2.0.0 exists already" in log
    body = (stubs / "runner" / "pr-wordstats.md").read_text()
    assert "`sha256:aa`" in body and "https://github.com/Example/agents/actions/runs/42" in body


def test_release_fails_when_a_promotion_is_refused(stubs: Path) -> None:
    (stubs / "promote-wordstats.json").write_text(json.dumps(
        {"action": "refused", "what": "promote wordstats", "reasons": ["verify (dev): signature: untrusted"]}))
    (stubs / "promote-wordstats.rc").write_text("1")
    script = step_named(workflow("release.yml"), "Promote each new version to dev, one pull request each")["run"]
    code, log, _, _ = run_step(stubs, script, {"BUILT": '["wordstats:1.1.0"]'})
    assert code == 1
    assert "::error::promoting wordstats 1.1.0 to dev: refused (exit 1)" in log
    assert "  - verify (dev): signature: untrusted" in log
    assert not any(c.startswith("gh ") for c in calls(stubs))


PROMOTE_ENV = {"AGENT": "", "TO_STAGE": "prod", "WINDOW": "5m", "PROMETHEUS_URL": "http://prometheus:9090"}


def test_scheduled_promotion_takes_every_new_canary_and_classifies_outcomes(stubs: Path) -> None:
    placements = [("a", "canary", "1"), ("a", "prod", "1"), ("b", "canary", "2"), ("b", "prod", "1"),
                  ("c", "canary", "3"), ("d", "canary", "4"), ("e", "canary", "5"), ("f", "dev", "6")]
    (stubs / "status.json").write_text(json.dumps({"stages": ["dev", "canary", "prod"], "placements": [
        {"agent": a, "stage": s, "digest": f"sha256:{d}"} for a, s, d in placements]}))
    outcomes = {"b": ("promoted", [], 0), "c": ("refused", ["soak: in canary for 2m; prod requires 10m"], 1),
                "d": ("inconclusive", ["12 requests; at least 20 needed"], 1),
                "e": ("rolled-back", ["error ratio 0.5 > 0.05"], 1)}
    for agent, (action, reasons, rc) in outcomes.items():
        (stubs / f"promote-{agent}.json").write_text(json.dumps({"action": action, "reasons": reasons}))
        (stubs / f"promote-{agent}.rc").write_text(str(rc))
    code, log, _, summary = run_step(stubs, step_named(workflow("promote.yml"), "Promote")["run"], PROMOTE_ENV)
    assert code == 1, log  # the rollback fails the run; the soak and the inconclusive analysis do not
    promoted = [c.split()[1] for c in calls(stubs) if c.startswith("promote ")]
    assert promoted == ["b", "c", "d", "e"]
    assert ("promote b --to prod --analyze 5m --prometheus http://prometheus:9090 --push "
            "--store oci://ghcr.io/example/agents --json") in calls(stubs)
    assert "::notice::c: the soak in canary is not over yet" in log
    assert "::warning::d: canary analysis inconclusive" in log
    assert "::error::e: the canary analysis failed and the canary was rolled back" in log
    assert "::error::" not in log.replace("::error::e:", "")
    assert "- **e**: rolled-back (exit 1)\n  - error ratio 0.5 > 0.05" in summary


def test_promotion_by_hand_of_one_agent_into_canary(stubs: Path) -> None:
    (stubs / "promote-wordstats.json").write_text(json.dumps({"action": "promoted", "reasons": []}))
    env = {**PROMOTE_ENV, "AGENT": "wordstats", "TO_STAGE": "canary", "PROMETHEUS_URL": ""}
    code, log, _, summary = run_step(stubs, step_named(workflow("promote.yml"), "Promote")["run"], env)
    assert code == 0, log
    assert [c for c in calls(stubs) if not c.startswith("git ")] == [
        "promote wordstats --to canary --push --store oci://ghcr.io/example/agents --json"]
    assert "### Promotions from dev to canary" in summary


@pytest.mark.parametrize(("env", "message"), [
    ({"PROMETHEUS_URL": ""}, "::error::the PROMETHEUS_URL secret is not set"),
    ({"AGENT": "x; rm -rf /"}, "::error::the agent input is not an agent name"),
    ({"TO_STAGE": "dev"}, "::error::to-stage must be canary or prod"),
])
def test_promotion_refuses_bad_settings_before_doing_anything(stubs: Path, env: dict[str, str],
                                                              message: str) -> None:
    code, log, _, _ = run_step(stubs, step_named(workflow("promote.yml"), "Promote")["run"], {**PROMOTE_ENV, **env})
    assert code == 2 and message in log
    assert calls(stubs) == []


def test_a_promotion_that_crashed_fails_the_run(stubs: Path) -> None:
    (stubs / "promote-a.rc").write_text("2")
    env = {**PROMOTE_ENV, "AGENT": "a"}
    code, log, _, summary = run_step(stubs, step_named(workflow("promote.yml"), "Promote")["run"], env)
    assert code == 1 and "::error::a: the promotion exited 2" in log
    assert "- **a**: error (exit 2)" in summary


def test_pr_uploads_the_sarif_from_a_job_that_never_runs_the_pull_requests_code() -> None:
    wf = workflow("pr.yml")
    assert set(wf["jobs"]) == {"check", "code-scanning"}
    check, upload = wf["jobs"]["check"], wf["jobs"]["code-scanning"]
    written = step_named(wf, "Check the changed templates")["env"]["AGENTFACTORY_CI_SARIF"]
    kept = step_named(wf, "Keep the SARIF report")
    assert kept["uses"].startswith("actions/upload-artifact@") and kept["with"]["path"] == written
    assert upload["needs"] == "check" and "!cancelled()" in upload["if"]
    assert "github.event.pull_request.head.repo.full_name == github.repository" in upload["if"]  # forks: read-only
    assert upload["permissions"] == {"contents": "read", "actions": "read", "security-events": "write"}
    assert "permissions" not in check  # the job that runs the pull request's code has no write scope
    assert not any("run" in s for s in upload["steps"])  # nothing of the pull request runs next to the token
    sarif_step = next(s for s in upload["steps"] if s.get("uses", "").startswith("github/codeql-action/upload-sarif@"))
    fetched = next(s for s in upload["steps"] if s.get("uses", "").startswith("actions/download-artifact@"))
    assert fetched["with"]["name"] == kept["with"]["name"]
    assert sarif_step["with"]["sarif_file"] == fetched["with"]["path"] + "/" + Path(written.split("}}")[-1]).name
