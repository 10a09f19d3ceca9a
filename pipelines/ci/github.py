"""What `ci check` tells GitHub Actions (a job summary, annotations, step outputs) or a terminal.

Annotations follow the workflow-command syntax: `::error file=F,line=N,title=T::message`, with
`%`, CR and LF escaped in the message and `,` and `:` too in properties. The job summary is capped
below GitHub's 1 MiB per step: a longer one is cut at a line and says so.

Everything shown comes from the pull request (folder and file names, manifest fields, error
messages quoting them), so nothing it holds may become a workflow command: every value is scrubbed
of control characters (a newline would start a line of its own, and a line starting with `::` is a
command to the runner) and of the legacy `##[` prefix before it is written anywhere; the summary
printed to the log is wrapped in `::stop-commands::` with a random token; step outputs use the
`name<<DELIMITER` syntax with a random delimiter, so no value can end its own output or add another.
"""

from __future__ import annotations

import dataclasses
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .check import CheckReport, TemplateCheck

SUMMARY_LIMIT = 1024 * 1024 - 4096  # GitHub refuses step summaries over 1 MiB; leave room for the note
_LOCATED = re.compile(r"^(?P<file>[^\s:][^:]*?\.(?:ya?ml|c|h|wat|zig|json|rego)):(?P<line>\d+)(?::(?P<col>\d+))?: ")
_IN_FILE = re.compile(r"^(?P<file>[^\s:][^:]*?\.(?:ya?ml|c|h|wat|zig|json|rego)): ")


def in_actions() -> bool:
    return os.environ.get("GITHUB_ACTIONS") == "true"


@dataclass(frozen=True)
class Annotation:
    file: str
    line: int | None
    message: str

    def command(self) -> str:
        props = f"file={_prop(self.file)}" + (f",line={self.line}" if self.line else "")
        return f"::error {props},title=agentfactory ci check::{_data(self.message)}"


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ufeff]")


def scrub(text: str) -> str:
    """`text` on one inert line: control characters as visible escapes, no legacy `##[` command prefix."""
    def escape(m: re.Match[str]) -> str:
        c = ord(m.group())
        return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"
    return _CONTROL.sub(escape, text).replace("##[", "#\\#[")


def _scrubbed(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, list):
        return [_scrubbed(v) for v in value]
    if isinstance(value, dict):
        return {_scrubbed(k): _scrubbed(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(value, **{f.name: _scrubbed(getattr(value, f.name))
                                             for f in dataclasses.fields(value)})
    return value


def _inert(text: str) -> str:
    """Last line of defence: a line that would still read as a workflow command is escaped."""
    return "\n".join("\\" + line if line.lstrip().startswith("::") else line for line in text.split("\n"))


def _data(text: str) -> str:
    return scrub(text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A"))


def _prop(text: str) -> str:
    return _data(text).replace(":", "%3A").replace(",", "%2C")


def annotations_of(report: CheckReport) -> list[Annotation]:
    """One per error, on the file (and line) the message names; else on the template's agent.yaml."""
    out: list[Annotation] = []
    for t in report.failed:
        for e in t.errors:
            m = _LOCATED.match(e) or _IN_FILE.match(e)
            if m:
                line = int(m.group("line")) if "line" in m.groupdict() and m.group("line") else None
                out.append(Annotation(m.group("file"), line, e[m.end():]))
            else:
                out.append(Annotation(f"{t.path}/agent.yaml", None, e))
    return out


def _verdict(t: TemplateCheck) -> str:
    return {"passed": "✅ passed", "failed": "❌ failed", "removed": "🗑️ removed"}[t.status]


def markdown(report: CheckReport) -> str:
    """The job summary: a table of templates, then each one's reasons, vulnerabilities and dependency changes."""
    report = _scrubbed(report)
    s = report.to_json()["summary"]
    lines = [f"## Agent Factory: {s['checked']} template(s) checked, {s['failed']} failed",
             "",
             f"Base `{report.base}` (merge base `{report.merge_base[:12]}`), head `{report.head[:12]}`."
             + (" **Policies changed: every template was re-checked.**" if report.policies_changed else
                (f" **{_recheck_note(report.recheck_paths)} changed: every template was re-checked.**"
                 if report.recheck_paths else "")),
             ""]
    if not report.templates:
        lines.append("No template changed since the base: nothing to check.")
        return "\n".join(lines) + "\n"
    lines += ["| template | version | verdict | why checked | digest |", "| --- | --- | --- | --- | --- |"]
    for t in report.templates:
        version = f"{t.base_version} → {t.version}" if t.base_version and t.version and t.base_version != t.version \
            else (t.version or t.base_version or "")
        lines.append(f"| `{t.name}` | {version} | {_verdict(t)} | {t.reason} | "
                     f"{'`' + t.digest[:19] + '…`' if t.digest else ''} |")
    for t in report.templates:
        if t.status == "removed":
            continue
        details = []
        if t.errors:
            details += ["**What to fix:**", ""] + [f"- {_md(e)}" for e in t.errors] + [""]
        findings = (t.scan or {}).get("findings", [])
        if findings:
            details += ["**Vulnerabilities:**", "", "| id | severity | package | status |", "| --- | --- | --- | --- |"]
            for f in findings:
                if f.get("suppressed"):
                    by = f.get("suppressedBy") or {}
                    status = f"suppressed by VEX: {by.get('status', '')} {by.get('justification', '')}".strip()
                else:
                    fixed = f.get("fixedVersions") or []
                    status = f"open; fix: upgrade to {' or '.join(fixed)}" if fixed else "open; no fix published"
                details.append(f"| {f.get('id')} | {str(f.get('severity', '')).upper()} | `{f.get('package')}` | "
                               f"{_md(status)} |")
            details.append("")
        unscanned = (t.scan or {}).get("unscanned", [])
        if unscanned:
            details.append(f"Not scanned: {', '.join('`' + u.get('component', '') + '`' for u in unscanned)}.")
            details.append("")
        if t.dependencies:
            details += ["**Dependencies (SBOM diff against the base):**", ""]
            details += [f"- {_md(d.describe())}" for d in t.dependencies] + [""]
        if details:
            renamed = f" (renamed from `{t.renamed_from}`)" if t.renamed_from else ""
            lines += ["", f"### {'❌' if t.status == 'failed' else '✅'} `{t.path}`{renamed}", "", *details]
    return _inert(_cap("\n".join(lines) + "\n"))


def _recheck_note(paths: list[str]) -> str:
    shown = ", ".join(f"`{p}`" for p in paths[:3])
    return shown + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _cap(text: str, limit: int = SUMMARY_LIMIT) -> str:
    data = text.encode()
    if len(data) <= limit:
        return text
    cut = data[:limit].decode("utf-8", "ignore")
    cut = cut[: cut.rfind("\n") + 1]
    return cut + (f"\n> **Truncated:** the summary was {len(data):,} bytes, over GitHub's 1 MiB step-summary "
                  "limit. The whole report: `agentfactory ci check --json` (or the job log).\n")


def outputs(report: CheckReport) -> dict[str, str]:
    s = report.to_json()["summary"]
    return {"checked": str(s["checked"]), "passed": str(s["passed"]), "failed": str(s["failed"]),
            "removed": str(s["removed"]), "failed-templates": ",".join(scrub(t.name) for t in report.failed)}


def output_lines(values: dict[str, str]) -> str:
    """Step outputs in the multi-line syntax, `name<<DELIMITER`, with a delimiter no value can contain."""
    delimiter = f"ghadelimiter_{secrets.token_hex(16)}"
    text = ""
    for k, v in values.items():
        if delimiter in v or delimiter in k or "\n" in k or "\n" in v:  # cannot happen once scrubbed: refuse
            raise ValueError(f"step output {k!r} cannot be written safely")
        text += f"{k}<<{delimiter}\n{v}\n{delimiter}\n"
    return text


def log_text(text: str) -> str:
    """Text for the job log, with workflow commands stopped around it (a random token resumes them)."""
    token = secrets.token_hex(16)
    return f"::stop-commands::{token}\n{_inert(text)}" + ("" if text.endswith("\n") else "\n") + f"::{token}::\n"


def publish(report: CheckReport) -> None:
    """Inside GitHub Actions: append the summary, write the outputs, print the annotations."""
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with Path(summary).open("a", encoding="utf-8") as f:
            f.write(markdown(report))
    out = os.environ.get("GITHUB_OUTPUT")
    if out:
        with Path(out).open("a", encoding="utf-8") as f:
            f.write(output_lines(outputs(report)))
    for a in annotations_of(report):
        print(a.command(), flush=True)
