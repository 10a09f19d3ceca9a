"""GitOps promotion on real Git repositories: gates, refusals, rollback, races, and canary analysis
against a real runtime service."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import git
import httpx
import pytest
import yaml
from promotion_helpers import promotion_trust, publish_logged, serving_stage
from runtime_helpers import OK_WAT, Signed, publish, signed_store, wat_manifest

from agentfactory.errors import ConfigError
from pipelines.promote.analysis import RuntimeMetrics
from pipelines.promote.attested import Ledger
from pipelines.promote.envrepo import LOCK_NAME, LOCK_UNNAMED_S, EnvRepo, PromotionConflict, parse_trailers
from pipelines.promote.promote import Context, Refused, history, promote, rollback, status
from pipelines.promote.stages import load_stages

pytestmark = pytest.mark.toolchain

FAIL_WAT = """(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start") (call $exit (i32.const 1))))
"""

STAGES = """apiVersion: agentfactory.dev/v1alpha1
kind: StageGraph
stages:
  - name: dev
    namespace: agents-dev
  - name: canary
    from: dev
    namespace: canary-agents
    gates: {{soak: {canary_soak}}}
  - name: prod
    from: canary
    namespace: prod-agents
    gates:
      approval: {approval}
      analysis: {{maxErrorRatio: 0.1, minRequests: 5}}
"""


def env_repo(path: Path) -> git.Repo:
    repo = git.Repo.init(path, initial_branch="main")
    with repo.config_writer() as cw:
        cw.set_value("user", "name", "Test")
        cw.set_value("user", "email", "test@example.com")
    (path / "README.md").write_text("environments\n")
    repo.index.add(["README.md"])
    repo.index.commit("init")
    return repo


@pytest.fixture
def world(af_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Context, Signed, Path]]:
    monkeypatch.setenv("GIT_AUTHOR_NAME", "Test")
    monkeypatch.setenv("GIT_AUTHOR_EMAIL", "test@example.com")
    monkeypatch.setenv("GIT_COMMITTER_NAME", "Test")
    monkeypatch.setenv("GIT_COMMITTER_EMAIL", "test@example.com")
    s = signed_store(af_home)
    publish_logged(s, tmp_path / "t1", {"hello": (wat_manifest("hello"), {"src/main.wat": OK_WAT}),
                                 "other": (wat_manifest("other"), {"src/main.wat": OK_WAT.replace("ok", "ko")})})
    publish(s, tmp_path / "unsigned", {"plain": (wat_manifest("plain"), {"src/main.wat": OK_WAT})}, sign=False)
    root = tmp_path / "envs"
    env_repo(root)
    stages = tmp_path / "stages.yaml"
    stages.write_text(STAGES.format(canary_soak="0s", approval="false"))
    graph = load_stages(stages)
    yield Context(graph, EnvRepo(root, graph), s.store, promotion_trust(s), s.engine), s, stages


def publish_v2(s: Signed, tmp: Path, name: str, wat: str) -> None:
    manifest = wat_manifest(name).replace("version: 1.0.0", "version: 1.1.0")
    publish_logged(s, tmp, {name: (manifest, {"src/main.wat": wat})})


def test_promote_through_the_stages_records_everything(world: tuple[Context, Signed, Path]) -> None:
    ctx, s, _ = world
    digest = s.store.resolve("hello").digest
    first = promote(ctx, "hello", "dev")
    assert first.action == "promoted" and first.digest == digest
    wa = yaml.safe_load((ctx.env.root / "deploy/envs/dev/agents/hello.yaml").read_text())
    assert wa["spec"] == {"agent": f"hello@{digest}", "stage": "dev"} and wa["kind"] == "WasmAgent"
    kz = yaml.safe_load((ctx.env.root / "deploy/envs/dev/kustomization.yaml").read_text())
    assert kz["resources"] == ["agents/hello.yaml"] and kz["namespace"] == "agents-dev"
    commit = ctx.env.repo.head.commit
    trailers = parse_trailers(str(commit.message))
    assert trailers["Agent"] == "hello" and trailers["Digest"] == digest and trailers["Stage"] == "dev"
    assert trailers["From-Stage"] == "store" and trailers["Verdict"].startswith("allowed score=10.0")
    attestation = trailers["Promotion-Attestation"]
    assert attestation.startswith("sha256:") and "(log index " in attestation
    assert promote(ctx, "hello", "canary").action == "promoted"
    assert parse_trailers(str(ctx.env.repo.head.commit.message))["From-Stage"] == "dev"
    again = promote(ctx, "hello", "canary")
    assert again.action == "unchanged" and again.commit is None
    rows = status(ctx)
    assert [(r["agent"], r["stage"], r["digest"]) for r in rows] == [("hello", "dev", digest),
                                                                     ("hello", "canary", digest)]
    assert all(r["allowed"] and r["since"] for r in rows)
    # Each promotion is a signed VSA about the digest, chained to the previous stage's attestation.
    from agentfactory.evidence import collect
    from agentfactory.verifier import promotion_records

    records, problems = promotion_records(digest, collect(s.store, s.store.resolve("hello")), ctx.trust)
    assert not problems and sorted(r.claim.stage for r in records) == ["canary", "dev"]
    dev, canary = sorted(records, key=lambda r: r.order)
    assert canary.claim.previous is not None and canary.claim.previous.sha256 == dev.sha256
    assert canary.claim.gates["policy"] == {"checked": True, "allowed": True, "score": 10.0}
    assert [e.trailers["Stage"] for e in ctx.env.history(agent="hello")] == ["canary", "dev"]
    assert not ctx.env.repo.is_dirty(untracked_files=True)


def test_refusals_say_why(world: tuple[Context, Signed, Path], tmp_path: Path) -> None:
    ctx, s, stages = world
    with pytest.raises(Refused, match="promote it to dev first; stages are never skipped"):
        promote(ctx, "hello", "canary")
    with pytest.raises(Refused) as unsigned:
        promote(ctx, "plain", "dev")
    assert any("signature" in r for r in unsigned.value.reasons)
    assert ctx.env.history() == []  # nothing committed
    promote(ctx, "hello", "dev")
    other = s.store.resolve("other").digest
    with pytest.raises(Refused, match="never passed it"):
        promote(ctx, "hello", "canary", digest=other)
    with pytest.raises(Refused, match="requires canary analysis"):
        promote(ctx, "hello", "canary") and promote(ctx, "hello", "prod")
    with pytest.raises(Refused, match="no metrics source"):
        promote(ctx, "hello", "prod", analysis_window=1.0)
    with pytest.raises(Exception, match="no stage 'staging'"):
        promote(ctx, "hello", "staging")
    # soak and approval
    stages.write_text(STAGES.format(canary_soak="1h", approval="true"))
    graph = load_stages(stages)
    strict = Context(graph, EnvRepo(ctx.env.root, graph), s.store, ctx.trust, s.engine)
    promote(strict, "other", "dev")
    with pytest.raises(Refused, match=r"soak: .* has been in dev for .*; canary requires 1h there"):
        promote(strict, "other", "canary")
    with pytest.raises(Refused, match="approval: prod requires a named approver"):
        promote(strict, "hello", "prod", analysis_window=1.0, metrics=RuntimeMetrics(["http://127.0.0.1:9/m"]))


def test_unreachable_metrics_fail_closed(world: tuple[Context, Signed, Path]) -> None:
    ctx, _, _ = world
    promote(ctx, "hello", "dev")
    promote(ctx, "hello", "canary")
    head = ctx.env.head()
    with pytest.raises(Refused, match="metrics unavailable .*nothing was promoted or rolled back"):
        promote(ctx, "hello", "prod", analysis_window=0.2, metrics=RuntimeMetrics(["http://127.0.0.1:9/metrics"]))
    assert ctx.env.head() == head


def test_dirty_and_diverged_environment_repositories(world: tuple[Context, Signed, Path], tmp_path: Path) -> None:
    ctx, s, _ = world
    promote(ctx, "hello", "dev")
    agent_file = ctx.env.root / "deploy/envs/dev/agents/hello.yaml"
    agent_file.write_text(agent_file.read_text().replace("stage: dev", "stage: prod"))
    with pytest.raises(ConfigError, match="uncommitted changes in the stage folders"):
        promote(ctx, "other", "dev")
    ctx.env.repo.git.checkout("--", ".")
    (ctx.env.root / "notes.txt").write_text("x")
    ctx.env.repo.index.add(["notes.txt"])
    with pytest.raises(ConfigError, match="the index has staged changes"):
        promote(ctx, "other", "dev")
    ctx.env.repo.index.commit("notes")
    # A clone whose upstream moved on: diverged.
    origin = git.Repo.clone_from(ctx.env.root, tmp_path / "origin", bare=True)
    clone = git.Repo.clone_from(origin.git_dir, tmp_path / "clone")
    elsewhere = git.Repo.clone_from(origin.git_dir, tmp_path / "elsewhere")
    (tmp_path / "elsewhere/x.txt").write_text("y")
    elsewhere.index.add(["x.txt"])
    elsewhere.index.commit("someone else")
    elsewhere.remote().push("main:main")
    clone.remote().fetch()
    graph = ctx.graph
    behind = Context(graph, EnvRepo(tmp_path / "clone", graph), s.store, ctx.trust, s.engine)
    with pytest.raises(ConfigError, match="1 commit\\(s\\) behind origin/main; pull"):
        promote(behind, "other", "dev")
    # With --push a promotion fetches first, sees it is behind, and refuses the same way.
    pushing = Context(graph, EnvRepo(tmp_path / "clone", graph), s.store, ctx.trust, s.engine, push=True)
    with pytest.raises(ConfigError, match="behind"):
        promote(pushing, "other", "dev")
    clone.remote().pull("main")
    assert promote(pushing, "other", "dev").action == "promoted"
    assert origin.head.commit.hexsha == clone.head.commit.hexsha  # pushed


def test_a_promotion_on_a_branch_for_a_pull_request(world: tuple[Context, Signed, Path]) -> None:
    ctx, _, _ = world
    head = ctx.env.head()
    ctx.branch = "promote/hello-dev"
    out = promote(ctx, "hello", "dev")
    assert out.branch == "promote/hello-dev" and ctx.env.head() == head  # HEAD stays put
    assert ctx.env.repo.active_branch.name == "main"
    assert ctx.env.repo.heads["promote/hello-dev"].commit.hexsha == out.commit


def test_rollback_is_a_new_commit_back_to_the_previous_digest(world: tuple[Context, Signed, Path],
                                                              tmp_path: Path) -> None:
    ctx, s, _ = world
    v1 = promote(ctx, "hello", "dev").digest
    publish_v2(s, tmp_path / "v2", "hello", OK_WAT.replace("ok\\n", "v2\\n"))
    v2 = s.store.resolve("hello:1.1.0").digest
    assert promote(ctx, "hello", "dev", digest=v2).digest == v2
    commits = len(list(ctx.env.repo.iter_commits()))
    back = rollback(ctx, "hello", "dev", reason="bad release")
    assert back.digest == v1 and ctx.env.placement("dev", "hello").digest == v1  # type: ignore[union-attr]
    assert len(list(ctx.env.repo.iter_commits())) == commits + 1  # history is not rewritten
    assert parse_trailers(str(ctx.env.repo.head.commit.message))["Reason"] == "bad release"
    gone = rollback(ctx, "hello", "dev")  # nothing before v1: the agent leaves the stage
    assert gone.digest is None and ctx.env.placement("dev", "hello") is None
    with pytest.raises(Refused, match="hello is not in dev: nothing to roll back"):
        rollback(ctx, "hello", "dev")


def test_two_promotions_racing(world: tuple[Context, Signed, Path], af_home: Path) -> None:
    ctx, _, stages = world
    env = {**os.environ, "AGENTFACTORY_HOME": str(af_home)}
    cmd = [str(Path(sys.executable).parent / "agentfactory")]
    procs = [subprocess.Popen([*cmd, "promote", name, "--to", "dev", "--stages", str(stages), "--env-repo",
                               str(ctx.env.root), "--json"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, cwd=ctx.env.root)
             for name in ("hello", "other", "hello")]
    results = [(*p.communicate(timeout=120), p.returncode) for p in procs]
    codes = sorted(r[2] for r in results)
    assert codes in ([0, 0, 0], [0, 0, 3]), results  # one of the two "hello" is unchanged, or lost a race
    assert {p.agent for p in ctx.env.placements("dev")} == {"hello", "other"}
    assert len(ctx.env.history()) == 2  # exactly one commit per agent
    assert not ctx.env.repo.is_dirty(untracked_files=True)
    # Compare-and-swap: a decision made on a HEAD that moved is not written.
    with pytest.raises(PromotionConflict, match="moved"):
        ctx.env.commit_placement("dev", "hello", None, subject="x", trailers={}, expected_head="0" * 40)


def test_every_decision_reads_the_stages_and_the_attestations_under_the_lock(
        world: tuple[Context, Signed, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """The class behind a race `test_two_promotions_racing` caught once: a concurrent promotion logs its
    attestation, then commits, under the environment's lock. A decision that loads the attestations before it
    logs and reads the stage file after it commits sees the stage file unattested, and refuses an honest
    promotion as built on a forgery. So every read a decision makes of either is made while this process holds
    the lock: promote with and without canary analysis, and rollback."""
    ctx, _, _ = world
    lock = Path(ctx.env.repo.git_dir) / LOCK_NAME
    reads: list[str] = []

    def held(what: str) -> None:
        assert lock.exists() and lock.read_text().strip() == str(os.getpid()), f"{what} read without the lock"
        reads.append(what)

    load, placement = Ledger.load.__func__, EnvRepo.placement  # type: ignore[attr-defined]
    monkeypatch.setattr(Ledger, "load", classmethod(lambda cls, *a, **k: (held("attestations"), load(cls, *a, **k))[1]))
    monkeypatch.setattr(EnvRepo, "placement", lambda self, *a, **k: (held("stage file"), placement(self, *a, **k))[1])
    assert promote(ctx, "hello", "dev").action == "promoted"
    assert promote(ctx, "hello", "canary").action == "promoted"
    with pytest.raises(Refused, match="metrics unavailable"):  # the decision before the analysis, then none
        promote(ctx, "hello", "prod", analysis_window=0.2, metrics=RuntimeMetrics(["http://127.0.0.1:9/metrics"]))
    assert rollback(ctx, "hello", "canary").action == "rolled-back"
    assert reads.count("attestations") >= 4 and reads.count("stage file") >= 4, reads


@pytest.mark.parametrize("reader", ["status", "history"])
def test_readers_never_see_a_promotion_half_done(world: tuple[Context, Signed, Path],
                                                 monkeypatch: pytest.MonkeyPatch, reader: str) -> None:
    """`status` and `history` do not take the lock (an auditor's clone may be read-only), so the interleaving
    that made `promote` refuse an honest promotion is forced on them: a whole promotion of `other` completes
    just after they loaded the attestations and before they read the stage files or the commits. Read once,
    `other` would be reported unattested (status exits 1 on that); they read again when HEAD moved."""
    ctx, _, _ = world
    promote(ctx, "hello", "dev")
    load = Ledger.load.__func__  # type: ignore[attr-defined]
    fired: list[str] = []

    def racing_load(cls: type[Ledger], *args: object, **kwargs: object) -> Ledger:
        ledger = load(cls, *args, **kwargs)
        if not fired:
            fired.append("other")
            assert promote(ctx, "other", "dev").action == "promoted"
        return ledger

    monkeypatch.setattr(Ledger, "load", classmethod(racing_load))
    if reader == "status":
        rows = status(ctx, verify=False)
        assert sorted((r["agent"], r["attestation"] is not None) for r in rows) == [("hello", True), ("other", True)]
    else:
        record = history(ctx)
        assert record["unattested"] == [] and sorted(e["agent"] for e in record["events"]) == ["hello", "other"]
    assert fired == ["other"]


def test_readers_wait_while_a_live_process_holds_the_lock(world: tuple[Context, Signed, Path]) -> None:
    """A promotion in progress (its lock held by a live process) is waited out; a dead process's lock is not."""
    ctx, _, _ = world
    promote(ctx, "hello", "dev")
    lock = Path(ctx.env.repo.git_dir) / LOCK_NAME
    holder = subprocess.Popen(["sleep", "60"])
    try:
        lock.write_text(f"{holder.pid}\n")
        done: list[list[dict[str, object]]] = []
        reader = threading.Thread(target=lambda: done.append(status(ctx, verify=False)))
        reader.start()
        reader.join(1.0)
        assert reader.is_alive() and not done  # waiting for the promotion to finish
        lock.unlink()
        reader.join(30)
        assert done and [r["agent"] for r in done[0]] == ["hello"]
    finally:
        holder.kill()
        holder.wait()
    lock.write_text(f"{holder.pid}\n")  # now a dead process's
    assert [r["agent"] for r in status(ctx, verify=False)] == ["hello"]


@pytest.mark.parametrize("content", ["", "-1", "0", "not a pid", "9" * 40, "4194305" + " " * 100_000])
def test_a_lock_file_without_a_live_pid_blocks_nobody_for_long(world: tuple[Context, Signed, Path],
                                                              content: str) -> None:
    """A lock file whose writer died before writing its pid, or holding anything else (`-1` would make
    os.kill ask about every process and look alive), is waited on only while it is new: once older than
    LOCK_UNNAMED_S, readers read and a promotion takes the lock over."""
    ctx, _, _ = world
    lock = Path(ctx.env.repo.git_dir) / LOCK_NAME
    lock.write_text(content)
    old = time.time() - LOCK_UNNAMED_S - 1
    os.utime(lock, (old, old))
    assert status(ctx, verify=False) == []
    assert promote(ctx, "hello", "dev").action == "promoted"
    assert not lock.exists()


@pytest.fixture
def runtime_url(world: tuple[Context, Signed, Path], tmp_path: Path) -> Iterator[str]:
    ctx, s, _ = world
    with serving_stage(s, ctx.trust, tmp_path / "audit.jsonl", stage="canary") as url:
        yield url


def _traffic(url: str, agent: str, digest: str, stop: threading.Event) -> None:
    with httpx.Client(base_url=url) as client:
        while not stop.is_set():
            client.post(f"/v1/agents/{agent}/invoke", params={"digest": digest})


def test_canary_analysis_promotes_a_healthy_canary_and_rolls_back_a_failing_one(
        world: tuple[Context, Signed, Path], runtime_url: str, tmp_path: Path) -> None:
    ctx, s, _ = world
    metrics = RuntimeMetrics([f"{runtime_url}/metrics"])
    good = promote(ctx, "hello", "dev").digest
    promote(ctx, "hello", "canary")
    stop = threading.Event()
    driver = threading.Thread(target=_traffic, args=(runtime_url, "hello", good, stop))
    driver.start()
    try:
        healthy = promote(ctx, "hello", "prod", analysis_window=1.0, metrics=metrics)
    finally:
        stop.set()
        driver.join()
    assert healthy.action == "promoted", healthy.to_json()
    assert healthy.analysis is not None and healthy.analysis.verdict == "pass"
    assert "pass requests=" in parse_trailers(str(ctx.env.repo.head.commit.message))["Analysis"]

    publish_v2(s, tmp_path / "v2", "hello", FAIL_WAT)
    bad = s.store.resolve("hello:1.1.0").digest
    promote(ctx, "hello", "dev", digest=bad)
    promote(ctx, "hello", "canary")
    stop.clear()
    driver = threading.Thread(target=_traffic, args=(runtime_url, "hello", bad, stop))
    driver.start()
    try:
        failing = promote(ctx, "hello", "prod", analysis_window=1.0, metrics=metrics)
    finally:
        stop.set()
        driver.join()
    assert failing.action == "rolled-back", failing.to_json()
    assert failing.rollback is not None and failing.rollback.digest == good
    assert ctx.env.placement("canary", "hello").digest == good  # type: ignore[union-attr]
    assert ctx.env.placement("prod", "hello").digest == good  # type: ignore[union-attr]
    record = parse_trailers(str(ctx.env.repo.head.commit.message))
    assert record["Action"] == "rollback" and record["Analysis"].startswith("fail") and "error" in record["Reason"]


def test_a_broken_stage_graph_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "s.yaml"
    for text, message in (
        ("kind: StageGraph\nstages: [{name: dev}, {name: prod, from: canary}]\n", "not a stage"),
        ("kind: StageGraph\nstages: [{name: a, from: b}, {name: b, from: a}]\n", "no `from`"),
        ("kind: StageGraph\nstages: [{name: dev}, {name: dev}]\n", "declared twice"),
        ("kind: StageGraph\nstages: [{name: dev, gates: {soak: soon}}]\n", "gates.soak"),
        ("kind: StageGraph\nstages: [{name: dev, gatez: {}}]\n", "unknown field"),
        ("kind: StageGraph\nstages: [{name: dev}, {name: p, from: dev, gates: {analysis: {maxErrorRatio: 2}}}]\n",
         "maxErrorRatio"),
    ):
        bad.write_text(text)
        with pytest.raises(Exception, match=message):
            load_stages(bad)
    assert [s.name for s in load_stages().stages] == ["dev", "canary", "prod"]  # the shipped graph

