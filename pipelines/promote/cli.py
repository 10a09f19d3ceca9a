"""`agentfactory promote | rollback | status | history`: GitOps promotion from the command line.

Exit codes: `promote` 0 promoted (or already there), 1 refused, rolled back by its canary analysis or
inconclusive (the reasons are printed); `rollback` 0 rolled back (what was asked), 1 refused; 2 bad
input or configuration (a stage that does not exist, a dirty or diverged environment repository,
metrics given wrongly), 3 a conflict with another promotion (run again).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.table import Table

from agentfactory.cli.common import (
    EXIT_OK,
    EXIT_PROBLEMS,
    err,
    handle_errors,
    json_option,
    out,
    policies_option,
    print_json,
    store_option,
)
from agentfactory.cli.verify_cmd import default_policy, policy_option, provider_option
from agentfactory.policy_select import open_engine, policy_engine_options

from .envrepo import PromotionConflict
from .promote import Context, Outcome, Refused

EXIT_CONFLICT = 3
F = TypeVar("F", bound=Callable[..., Any])

stages_option = click.option("--stages", "stages_path", type=click.Path(dir_okay=False, path_type=Path),
                             default=None, envvar="AGENTFACTORY_STAGES",
                             help="Stage graph (default: pipelines/stages.yaml).")
env_option = click.option("--env-repo", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
                          envvar="AGENTFACTORY_ENV_REPO", show_default=True,
                          help="Working copy of the environment repository (default: this repository).")


def environment_options(func: F) -> F:
    """What every command deciding on the environment takes: the stage graph, the environment
    repository, the trust policy and its keys, the Rego policies, the store, --json; errors handled."""
    for decorate in (handle_errors, json_option, store_option, policies_option, policy_engine_options,
                     provider_option, policy_option, env_option, stages_option):
        func = decorate(func)
    return func


tlog_options = (
    click.option("--tlog", "tlog_url", envvar="AGENTFACTORY_TLOG", default="embedded", show_default=True,
                 metavar="embedded|URL", help="The transparency log the promotion attestation goes to (required: "
                                              "an unlogged promotion proves nothing)."),
    click.option("--tlog-key", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
                 envvar="AGENTFACTORY_TLOG_KEY", help="With a Rekor URL: the log's public key (PEM)."),
)


def with_tlog(func: F) -> F:
    for decorate in reversed(tlog_options):
        func = decorate(func)
    return func


def _context(stages_path: Path | None, env_repo: Path, store_url: str | None, policy_path: Path | None,
             provider: str | None, policies_dir: Path | None, branch: str | None = None,
             push: bool = False, tlog_url: str | None = None, tlog_key: Path | None = None) -> Context:
    from agentfactory.store import open_store
    from agentfactory.trust import load_trust_policy

    from .envrepo import EnvRepo
    from .stages import load_stages

    graph = load_stages(stages_path)
    trust = load_trust_policy(policy_path) if policy_path else default_policy(provider)
    log = None
    if tlog_url is not None:
        from agentfactory.errors import ConfigError
        from agentfactory.tlog.connect import open_tlog

        if tlog_url == "none":
            raise ConfigError("--tlog none: a promotion must be recorded in a transparency log (every plane orders "
                              "promotions by the log); use embedded or a Rekor URL")
        log, _ = open_tlog(tlog_url, tlog_key)
    return Context(graph, EnvRepo(env_repo, graph), open_store(store_url), trust, open_engine(policies_dir),
                   branch=branch, push=push, tlog=log)


def _finish(outcome: Outcome | None, error: Exception | None, as_json: bool,
            ok: tuple[str, ...] = ("promoted", "unchanged")) -> None:
    """Print the outcome and exit: 0 when its action is one of `ok` (what the command was asked to do)."""
    if isinstance(error, PromotionConflict):
        if as_json:
            print_json({"action": "conflict", "reasons": [str(error)]})
        else:
            err.print(f"conflict: {error}", markup=False)
        sys.exit(EXIT_CONFLICT)
    if isinstance(error, Refused):
        if as_json:
            print_json({"action": "refused", "what": error.what, "reasons": error.reasons})
        else:
            err.print(f"REFUSED {error.what}", markup=False)
            for r in error.reasons:
                err.print(f"  ✗ {r}", markup=False)
        sys.exit(EXIT_PROBLEMS)
    assert outcome is not None
    if as_json:
        print_json(outcome.to_json())
    else:
        _print(outcome)
    sys.exit(EXIT_OK if outcome.action in ok else EXIT_PROBLEMS)


def _print(o: Outcome, indent: str = "") -> None:
    if o.analysis is not None:
        a = o.analysis
        out.print(f"{indent}canary analysis ({a.measurement.source}, {a.measurement.window_seconds:.0f} s): "
                  f"{a.verdict.upper()}", markup=False)
        for r in a.reasons:
            out.print(f"{indent}  {r}", markup=False)
    if o.action == "promoted":
        where = f" on branch {o.branch} (open a pull request)" if o.branch else ""
        out.print(f"{indent}PROMOTED {o.agent}@{o.digest} to {o.stage}: commit {o.commit[:12] if o.commit else ''}"
                  f"{where}", markup=False)
    elif o.action == "rolled-back" and o.rollback is not None:
        out.print(f"{indent}NOT PROMOTED {o.agent}@{o.digest} to {o.stage}; the canary was rolled back:",
                  markup=False)
        _print(o.rollback, indent + "  ")
    elif o.action == "rolled-back":
        target = o.digest or "nothing (removed)"
        out.print(f"{indent}ROLLED BACK {o.agent} in {o.stage} to {target}: commit "
                  f"{o.commit[:12] if o.commit else ''}", markup=False)
        for r in o.reasons:
            out.print(f"{indent}  reason: {r}", markup=False)
    else:
        out.print(f"{indent}{o.action.upper()} {o.agent} {o.stage}: " + "; ".join(o.reasons), markup=False)


@click.command("promote")
@click.argument("agent")
@click.option("--to", "to", required=True, help="The stage to promote into.")
@click.option("--digest", default=None, help="The digest to promote (default: what the previous stage runs).")
@click.option("--approved-by", default=None, help="The approver, for stages with gates.approval (recorded).")
@click.option("--analyze", "window", default=None, metavar="WINDOW",
              help="Canary analysis over WINDOW (30s, 5m, 1h) before promoting; a failing canary is rolled back.")
@click.option("--prometheus", default=None, envvar="AGENTFACTORY_PROMETHEUS_URL", metavar="URL",
              help="Prometheus HTTP API for the analysis (the window is the past).")
@click.option("--runtime-metrics", "runtime_urls", multiple=True, metavar="URL",
              help="A runtime's /metrics URL (repeatable): scraped at the start and the end of the window.")
@click.option("--branch", default=None, help="Commit on this new branch (for a pull request), not the current one.")
@click.option("--push", is_flag=True, help="Fetch first, then push the commit to the branch's remote.")
@with_tlog
@environment_options
def promote_cmd(agent: str, to: str, digest: str | None, approved_by: str | None, window: str | None,
                prometheus: str | None, runtime_urls: tuple[str, ...], branch: str | None, push: bool,
                tlog_url: str, tlog_key: Path | None,
                stages_path: Path | None, env_repo: Path, policy_path: Path | None, provider: str | None,
                policies_dir: Path | None, store_url: str | None, as_json: bool) -> None:
    """Promote AGENT into a stage: the digest the previous stage runs, after that stage's gates
    (artifact policy, soak time, approval, canary analysis), as a commit to the environment repository."""
    from .analysis import MetricsSource, PrometheusMetrics, RuntimeMetrics, parse_window
    from .promote import promote

    ctx = _context(stages_path, env_repo, store_url, policy_path, provider, policies_dir, branch, push, tlog_url,
                   tlog_key)
    seconds = parse_window(window) if window else None
    metrics: MetricsSource | None = None
    if prometheus and runtime_urls:
        from agentfactory.errors import ConfigError

        raise ConfigError("give --prometheus or --runtime-metrics, not both")
    if prometheus:
        metrics = PrometheusMetrics(prometheus)
    elif runtime_urls:
        metrics = RuntimeMetrics(list(runtime_urls), progress=_progress_line(agent) if sys.stderr.isatty() else None)
    try:
        outcome = promote(ctx, agent, to, digest=digest, approved_by=approved_by, analysis_window=seconds,
                          metrics=metrics)
    except (Refused, PromotionConflict) as exc:
        _finish(None, exc, as_json)
    _finish(outcome, None, as_json)


def _progress_line(agent: str) -> Callable[[Any, float], None]:
    """On a terminal, one line rewritten in place while the analysis window runs: what it has seen."""
    def show(m: Any, left: float) -> None:  # an analysis.Measurement (imported lazily, as the command does)
        ratio = f"{100 * m.errors / m.requests:.1f} % errors" if m.requests else "no errors yet"
        end = "\n" if left <= 0 else ""
        sys.stderr.write(f"\ranalyzing {agent}: {m.requests:.0f} requests, {ratio} so far, {left:.0f} s left   {end}")
        sys.stderr.flush()
    return show


@click.command("rollback")
@click.argument("agent")
@click.option("--stage", required=True, help="The stage to roll back.")
@click.option("--reason", default="manual rollback", show_default=True, help="Recorded in the commit.")
@click.option("--branch", default=None, help="Commit on this new branch (for a pull request).")
@click.option("--push", is_flag=True, help="Fetch first, then push the commit.")
@with_tlog
@environment_options
def rollback_cmd(agent: str, stage: str, reason: str, branch: str | None, push: bool, tlog_url: str,
                 tlog_key: Path | None, stages_path: Path | None, env_repo: Path, policy_path: Path | None,
                 provider: str | None, policies_dir: Path | None, store_url: str | None, as_json: bool) -> None:
    """Put back the digest STAGE ran before the current one, as a new commit (history is never rewritten)."""
    from .promote import rollback

    ctx = _context(stages_path, env_repo, store_url, policy_path, provider, policies_dir, branch, push, tlog_url,
                   tlog_key)
    try:
        outcome = rollback(ctx, agent, stage, reason=reason)
    except (Refused, PromotionConflict) as exc:
        _finish(None, exc, as_json)
    _finish(outcome, None, as_json, ok=("rolled-back", "unchanged"))


@click.command("status")
@click.option("--no-verify", is_flag=True, help="Do not re-verify each placement (faster).")
@environment_options
def status_cmd(no_verify: bool, stages_path: Path | None, env_repo: Path, policy_path: Path | None,
               provider: str | None, policies_dir: Path | None, store_url: str | None, as_json: bool) -> None:
    """Agents by stages: version, digest, verdict now, and since when. Exit 1 when a placement no longer verifies."""
    from .promote import status

    ctx = _context(stages_path, env_repo, store_url, policy_path, provider, policies_dir)
    try:
        rows = status(ctx, verify=not no_verify)
    except PromotionConflict as exc:  # a promotion kept the lock or kept moving HEAD for 30 s: exit 3
        _finish(None, exc, as_json)
    if as_json:
        print_json({"stages": [s.name for s in ctx.graph.stages], "placements": rows})
    else:
        table = Table(title="agents by stages", title_justify="left")
        for col in ("agent", "stage", "version", "digest", "verdict", "since"):
            table.add_column(col, overflow="fold")
        for r in rows:
            style = "green" if r["allowed"] else ("red" if r["allowed"] is False else "")
            verdict = f"[{style}]{r['verdict']}[/{style}]" if style else r["verdict"]
            table.add_row(r["agent"], r["stage"], r["version"], r["digest"], verdict, r["since"])
        out.print(table)
        if not rows:
            out.print("No agent is in any stage yet: `agentfactory promote AGENT --to "
                      f"{ctx.graph.stages[0].name}`.", markup=False)
    sys.exit(EXIT_PROBLEMS if any(r["allowed"] is False for r in rows) else EXIT_OK)


@click.command("history")
@click.argument("agent", required=False)
@click.option("--stage", default=None, help="Only this stage.")
@environment_options
def history_cmd(agent: str | None, stage: str | None, stages_path: Path | None, env_repo: Path,
                policy_path: Path | None, provider: str | None, policies_dir: Path | None, store_url: str | None,
                as_json: bool) -> None:
    """The promotion record of AGENT (or of every agent), newest first, from the signed, logged promotion
    attestations (time: the transparency log's); commits in the stage folders that no attestation backs
    are listed apart as unattested (exit 1), whatever their trailers say."""
    from .promote import history

    ctx = _context(stages_path, env_repo, store_url, policy_path, provider, policies_dir)
    if stage:
        ctx.graph.stage(stage)
    try:
        record = history(ctx, agent, stage)
    except PromotionConflict as exc:
        _finish(None, exc, as_json)
    if as_json:
        print_json(record)
    else:
        table = Table(title=f"history of {agent or 'every agent'} (signed promotion attestations; time: the "
                            "transparency log's)", title_justify="left")
        for col in ("time", "log", "action", "agent", "stage", "from", "version", "digest", "verdict / reason",
                    "analysis", "commit"):
            table.add_column(col, overflow="fold")
        for e in record["events"]:
            table.add_row(e["time"], str(e["log_index"]), e["action"], e["agent"], e["stage"], e["from_stage"] or "",
                          e["version"], e["digest"], e["reason"] or e["verdict"] or "", e["analysis"] or "",
                          (e["commit"] or "(no commit)")[:12])
        out.print(table)
        for u in record["unattested"]:
            err.print(f"UNATTESTED commit {u['commit'][:12]} ({u['commit_time']}, by Git's clock) "
                      f"{u['subject']!r}: {u['unattested']}; its trailers are not the record", markup=False)
    sys.exit(EXIT_PROBLEMS if record["unattested"] else EXIT_OK)
