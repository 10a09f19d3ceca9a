"""What `ci check` tells GitHub Actions (a job summary, annotations, step outputs) or a terminal.

Annotations follow the workflow-command syntax: `::error file=F,line=N,title=T::message`, with
`%`, CR and LF escaped in the message and `,` and `:` too in properties. The job summary is capped
below GitHub's 1 MiB per step: a longer one is cut at a line and says so.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

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


def _data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _prop(text: str) -> str:
    return _data(text).replace(":", "%3A").replace(",", "%2C")


def annotations_of(report: CheckReport) -> list[Annotation]:
    """One per error, on the file (and line) the message names; else on the template's agent.yaml."""
    out = []
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
    s = report.to_json()["summary"]
    lines = [f"## Agent Factory: {s['checked']} template(s) checked, {s['failed']} failed",
             "",
             f"Base `{report.base}` (merge base `{report.merge_base[:12]}`), head `{report.head[:12]}`."
             + (" **Policies changed: every template was re-checked.**" if report.policies_changed else ""),
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
    return _cap("\n".join(lines) + "\n")


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
            "removed": str(s["removed"]), "failed-templates": ",".join(t.name for t in report.failed)}


def publish(report: CheckReport) -> None:
    """Inside GitHub Actions: append the summary, write the outputs, print the annotations."""
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with Path(summary).open("a", encoding="utf-8") as f:
            f.write(markdown(report))
    out = os.environ.get("GITHUB_OUTPUT")
    if out:
        with Path(out).open("a", encoding="utf-8") as f:
            for k, v in outputs(report).items():
                f.write(f"{k}={v}\n")
    for a in annotations_of(report):
        print(a.command(), flush=True)
