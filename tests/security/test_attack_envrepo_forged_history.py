"""Attack: the environment repository's history is forged.

The attacker can push to the environment repository (a compromised CI token, a careless reviewer),
but holds no promoter key. They write commits whose trailers (Agent, Stage, Digest, Action, Verdict,
Analysis) claim promotions that never happened, backdate them with GIT_COMMITTER_DATE, or edit a
stage file by hand. The promotion record is the signed, logged promotion attestations: `status`,
`history`, `rollback` and the soak gate read them (time: the transparency log's), trailers are a copy
for people, and a stage file or commit that no attestation backs is reported and never built on.
Everything here runs the real CLI on a real Git repository.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from promotion_helpers import STAGES, Flow, agentfactory, promotion_flow, publish_logged
from runtime_helpers import OK_WAT, wat_manifest

pytestmark = pytest.mark.toolchain


@pytest.fixture
def flow(af_home: Path, tmp_path: Path) -> Flow:
    """greeter 1.0.0 in dev, canary, prod; 1.1.0 in dev (canary rolled back from it); all attested."""
    return promotion_flow(af_home, tmp_path)


def _cli(flow: Flow, *args: str, stages: Path | None = None) -> tuple[int, str, str]:
    env = flow.ctx.env.root
    done = agentfactory(*args, "--env-repo", str(env), "--store", flow.signed.store.url, "--policy",
                        str(flow.trust_file), "--stages", str(stages or env.parent / "stages.yaml"))
    return done.returncode, done.stdout.decode(), " ".join(done.stderr.decode().split())


def _forge(flow: Flow, message: str, *, date: str = "2026-12-01T00:00:00Z", touch: str | None = None) -> str:
    """A commit by the attacker (plain git, any dates they like) that changes nothing that runs: empty,
    or (`touch`) a comment added to that stage's kustomization.yaml. Its hash."""
    env = {**os.environ, "GIT_AUTHOR_NAME": "mallory", "GIT_AUTHOR_EMAIL": "m@example.com",
           "GIT_COMMITTER_NAME": "mallory", "GIT_COMMITTER_EMAIL": "m@example.com",
           "GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date}
    root = flow.ctx.env.root
    if touch is not None:
        with (root / f"deploy/envs/{touch}/kustomization.yaml").open("a") as f:
            f.write("# tidy\n")
    subprocess.run(["git", "commit", "-q", "-a", "--allow-empty", "-m", message], cwd=root, env=env, check=True)
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, check=True, capture_output=True,
                          text=True).stdout.strip()


def _trailers(subject: str, **fields: str) -> str:
    return subject + "\n\n" + "\n".join(f"{k.replace('_', '-')}: {v}" for k, v in fields.items()) + "\n"


def _v3(flow: Flow, tmp_path: Path) -> str:
    """greeter 1.2.0: built and signed by the real pipeline, never promoted anywhere."""
    manifest = wat_manifest("greeter").replace("version: 1.0.0", "version: 1.2.0")
    publish_logged(flow.signed, tmp_path / "v3", {"greeter": (manifest, {"src/main.wat": OK_WAT.replace("ok\\n",
                                                                                                     "v3\\n")})})
    return flow.signed.store.resolve("greeter:1.2.0").digest


def test_forged_trailers_do_not_steer_rollback(flow: Flow, tmp_path: Path) -> None:
    v3 = _v3(flow, tmp_path)
    # Two no-op commits: "v3 was promoted to dev", then "v2 was promoted to dev" (v2 is what dev runs).
    # Replaying trailers, the digest before v2 would be v3, which was never in dev.
    for digest, version in ((v3, "1.2.0"), (flow.v2, "1.1.0")):
        _forge(flow, _trailers(f"promote greeter {version} to dev", Agent="greeter", Version=version, Digest=digest,
                               Stage="dev", From_Stage="store", Action="promote",
                               Verdict="allowed score=10.0 stage=dev"), touch="dev")
    code, out, err = _cli(flow, "rollback", "greeter", "--stage", "dev", "--reason", "bad release", "--json")
    assert code == 0, (out, err)  # a rollback that rolled back did what was asked: exit 0
    done = json.loads(out)
    assert done["action"] == "rolled-back" and done["digest"] == flow.v1, done  # the previous *attested* digest
    placed = flow.ctx.env.placement("dev", "greeter")
    assert placed is not None and placed.digest == flow.v1 and placed.digest != v3
    # The rollback withdrew v2 from dev by a signed, logged attestation; history says so, from the log.
    code, out, err = _cli(flow, "history", "greeter", "--stage", "dev", "--json")
    record = json.loads(out)
    newest = record["events"][0]
    assert (newest["action"], newest["digest"], newest["reason"]) == ("withdraw", flow.v2, "bad release")
    assert not any(e["digest"] == v3 for e in record["events"])
    flagged = [u for u in record["unattested"] if u["trailers"].get("Digest") == v3]
    assert flagged and "no trusted, logged promotion attestation backs" in flagged[0]["unattested"], record
    assert code == 1  # unattested commits are reported


def test_a_backdated_commit_does_not_skip_the_soak(flow: Flow, tmp_path: Path) -> None:
    soak = tmp_path / "soak.yaml"
    soak.write_text(STAGES.replace("    from: dev\n", "    from: dev\n    gates: {soak: 24h}\n"))
    # "1.1.0 entered dev in 2020", by the committer date and the trailers.
    _forge(flow, _trailers("promote greeter 1.1.0 to dev", Agent="greeter", Version="1.1.0", Digest=flow.v2,
                           Stage="dev", From_Stage="store", Action="promote", Verdict="allowed score=10.0 stage=dev"),
           date="2020-01-01T00:00:00Z", touch="dev")
    code, out, err = _cli(flow, "promote", "greeter", "--to", "canary", stages=soak)
    assert code == 1, (out, err)
    assert "REFUSED" in err and "soak: greeter@" in err and "the transparency log's time" in err, err
    assert "canary requires 24h there" in err and "2020" not in err, err
    placed = flow.ctx.env.placement("canary", "greeter")
    assert placed is not None and placed.digest == flow.v1  # unchanged
    # status says since when by the log, not by Git.
    code, out, err = _cli(flow, "status", "--json", "--no-verify")
    rows = {(r["stage"], r["agent"]): r for r in json.loads(out)["placements"]}
    assert not rows[("dev", "greeter")]["since"].startswith("2020"), rows
    assert rows[("dev", "greeter")]["attestation"].startswith("sha256:")


def test_forged_verdict_and_analysis_trailers_are_flagged_not_believed(flow: Flow) -> None:
    # A "promotion of 1.1.0 to prod that passed canary analysis", and a copy of the real prod promotion's
    # attestation hash under a commit that claims another digest.
    code, out, _ = _cli(flow, "history", "greeter", "--json")
    assert code == 0, out  # the genuine history has nothing unattested
    genuine = json.loads(out)
    prod = next(e for e in genuine["events"] if e["stage"] == "prod")
    assert prod["action"] == "promote" and prod["digest"] == flow.v1 and prod["commit"]
    assert prod["verdict"].startswith("allowed score=") and prod["time"] and prod["log_index"] is not None
    forged = _forge(flow, _trailers("promote greeter 1.1.0 to prod", Agent="greeter", Version="1.1.0",
                                    Digest=flow.v2, Stage="prod", From_Stage="canary", Action="promote",
                                    Verdict="allowed score=10.0 stage=prod", Approved_By="alice",
                                    Analysis="pass requests=5000 errors=0 error_ratio=0.0000 p95=0.0010s"),
                    touch="prod")
    replayed = _forge(flow, _trailers("promote greeter 1.1.0 to prod", Agent="greeter", Version="1.1.0",
                                      Digest=flow.v2, Stage="prod", Action="promote",
                                      Promotion_Attestation=prod["attestation"],
                                      Analysis="pass requests=9999 errors=0"))
    code, out, err = _cli(flow, "history", "greeter", "--json")
    assert code == 1, (out, err)
    record = json.loads(out)
    assert [e for e in record["events"] if e["stage"] == "prod"] == [prod]  # what the attestations say
    flags = {u["commit"]: u["unattested"] for u in record["unattested"]}
    assert "no trusted, logged promotion attestation backs" in flags[forged], flags
    assert "again (a replayed record)" in flags[replayed], flags
    code, out, err = _cli(flow, "history", "greeter")
    assert code == 1 and f"UNATTESTED commit {forged[:12]}" in err and "its trailers are not the record" in err, err
    assert "5000" not in out and "9999" not in out, out


def test_a_hand_edited_stage_file_is_reported_and_refused(flow: Flow, tmp_path: Path) -> None:
    v3 = _v3(flow, tmp_path)
    path = flow.ctx.env.root / "deploy/envs/canary/agents/greeter.yaml"
    path.write_text(path.read_text().replace(flow.v1, v3).replace("1.0.0", "1.2.0"))
    subprocess.run(["git", "commit", "-q", "-am", "bump canary"], cwd=flow.ctx.env.root, check=True,
                   env={**os.environ, "GIT_AUTHOR_NAME": "m", "GIT_AUTHOR_EMAIL": "m@example.com",
                        "GIT_COMMITTER_NAME": "m", "GIT_COMMITTER_EMAIL": "m@example.com"})
    where = "deploy/envs/canary/agents/greeter.yaml"
    for args in (("status",), ("status", "--no-verify", "--json")):
        code, out, err = _cli(flow, *args)
        assert code == 1, (args, out, err)
        assert where in " ".join(out.split()) and "no standing promotion attestation to canary" in \
            " ".join(out.split()), out
    code, out, err = _cli(flow, "promote", "greeter", "--to", "prod")
    assert code == 1 and f"{where} pins {v3}" in err and "promote refuses to build on it" in err, err
    code, out, err = _cli(flow, "rollback", "greeter", "--stage", "canary")
    assert code == 1 and "rollback refuses to build on it" in err, err
    placed = flow.ctx.env.placement("prod", "greeter")
    assert placed is not None and placed.digest == flow.v1
    code, out, err = _cli(flow, "history", "greeter", "--stage", "canary", "--json")
    record = json.loads(out)
    assert code == 1 and any(where in u["paths"] and "with no promotion record" in u["unattested"]
                             for u in record["unattested"]), record

    # The entry stage needs no promotion to run, but its file is still only what promote wrote: a hand edit
    # of dev is not a base for canary.
    dev = flow.ctx.env.root / "deploy/envs/dev/agents/greeter.yaml"
    dev.write_text(dev.read_text().replace(flow.v2, v3).replace("1.1.0", "1.2.0"))
    subprocess.run(["git", "commit", "-q", "-am", "bump dev"], cwd=flow.ctx.env.root, check=True,
                   env={**os.environ, "GIT_AUTHOR_NAME": "m", "GIT_AUTHOR_EMAIL": "m@example.com",
                        "GIT_COMMITTER_NAME": "m", "GIT_COMMITTER_EMAIL": "m@example.com"})
    code, out, err = _cli(flow, "status", "--no-verify", "--json")
    flagged = {r["stage"] for r in json.loads(out)["placements"] if r["allowed"] is False}
    assert code == 1 and flagged == {"dev", "canary"}, out
    code, out, err = _cli(flow, "rollback", "greeter", "--stage", "dev")
    assert code == 1 and f"deploy/envs/dev/agents/greeter.yaml pins {v3}" in err, err


@pytest.mark.parametrize("trailer", ["sha256:", "sha256: ", "sha256:" + "A" * 64, "sha256:" + "a" * 63,
                                     "sha256:" + "a" * 64 + " (log index x)", "sha256:" + "a" * 64 + "; rm -rf /",
                                     "sha256:\u0661" + "a" * 63])
def test_a_malformed_attestation_trailer_is_unattested_never_a_crash(flow: Flow, trailer: str) -> None:
    """An environment-repository writer writes trailers: `Promotion-Attestation: sha256:` made `status` and
    `history` exit 70 (IndexError), which also stopped the scheduled promotions that run `status`. Any trailer
    that is not exactly `sha256:<64 hex>[ (log index N)]` names no attestation."""
    forged = _forge(flow, _trailers("note", Agent="greeter", Stage="prod", Promotion_Attestation=trailer),
                    touch="prod")
    code, out, err = _cli(flow, "history", "greeter", "--json")
    assert code == 1, (out, err)
    flags = {u["commit"]: u["unattested"] for u in json.loads(out)["unattested"]}
    assert forged in flags, flags
    code, out, err = _cli(flow, "status", "--no-verify")
    assert code in (0, 1) and "internal error" not in err, (code, out, err)


def test_a_stage_file_is_a_small_regular_file_named_after_its_agent(flow: Flow) -> None:
    """An environment-repository writer's stage files: a symlink to /dev/zero was read without end by `status` (4 GB
    in 6 s, and the scheduled promotions that run `status` with it); a second file naming `greeter` was reported as
    greeter.yaml's, and `metadata.name: /x` crashed `status` (exit 70). The file is the agent; anything else is
    refused, naming the file."""
    prod = flow.ctx.env.root / "deploy/envs/prod/agents"
    good = (prod / "greeter.yaml").read_text()
    cases = {
        "zero.yaml": None,  # a symlink to /dev/zero
        "zz-extra.yaml": good,  # another file naming greeter
        "slash.yaml": good.replace("name: greeter\n", "name: /x\n", 1),
        "big.yaml": good + "#" * (70 * 1024) + "\n",
    }
    for name, text in cases.items():
        path = prod / name
        if text is None:
            path.symlink_to("/dev/zero")
        else:
            path.write_text(text)
        subprocess.run(["git", "add", "-A"], cwd=flow.ctx.env.root, check=True)
        subprocess.run(["git", "commit", "-q", "-m", f"add {name}"], cwd=flow.ctx.env.root, check=True)
        code, out, err = _cli(flow, "status", "--no-verify")
        assert code not in (0, 70) and "internal error" not in err and f"prod/agents/{name}" in err, (name, code, err)
        path.unlink()
        subprocess.run(["git", "commit", "-q", "-a", "-m", f"remove {name}"], cwd=flow.ctx.env.root, check=True)
    code, out, err = _cli(flow, "status", "--no-verify")
    assert code == 0, (out, err)


def test_a_merged_promotion_branch_is_attested_and_an_evil_merge_is_not(flow: Flow) -> None:
    """The documented pull-request flow: `promote --branch pr-1`, then the pull request merged with a merge commit.
    The merge was judged by its diff against its first parent, so `history` cried UNATTESTED at every merged
    promotion. A merge is judged by what it adds that none of its parents has: nothing when clean; a stage file
    changed in the merge itself (an "evil merge") is still unattested."""
    root = flow.ctx.env.root
    code, out, err = _cli(flow, "promote", "greeter", "--to", "canary", "--branch", "pr-1", "--json")
    assert code == 0, (out, err)
    subprocess.run(["git", "merge", "-q", "--no-ff", "pr-1", "-m", "Merge pull request #1 from pr-1"], cwd=root,
                   check=True)
    code, out, err = _cli(flow, "history", "--json")
    assert code == 0 and json.loads(out)["unattested"] == [], (out, err)
    subprocess.run(["git", "checkout", "-q", "-b", "pr-2", "HEAD~1"], cwd=root, check=True)
    subprocess.run(["git", "commit", "-q", "--allow-empty", "-m", "unrelated"], cwd=root, check=True)
    subprocess.run(["git", "checkout", "-q", "main"], cwd=root, check=True)
    subprocess.run(["git", "merge", "-q", "--no-ff", "--no-commit", "pr-2"], cwd=root, check=True)
    with (root / "deploy/envs/prod/kustomization.yaml").open("a") as f:
        f.write("# slipped into the merge\n")
    subprocess.run(["git", "commit", "-q", "-a", "-m", "Merge pull request #2 from pr-2"], cwd=root, check=True)
    evil = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, check=True, capture_output=True,
                          text=True).stdout.strip()
    code, out, err = _cli(flow, "history", "--json")
    assert code == 1, (out, err)
    assert [u["commit"] for u in json.loads(out)["unattested"]] == [evil], out


def test_a_hand_edit_is_found_under_any_number_of_commits(flow: Flow) -> None:
    """`history` read the newest 1,000 commits: a hand edit under 1,000 empty commits (`git commit-tree`, a second's
    work) was gone from it, and `history` exited 0. The whole history is read, in one `git log`."""
    root = flow.ctx.env.root
    edit = _forge(flow, "tidy", touch="prod")
    head = edit
    tree = subprocess.run(["git", "rev-parse", "HEAD^{tree}"], cwd=root, check=True, capture_output=True,
                          text=True).stdout.strip()
    for i in range(1001):
        head = subprocess.run(["git", "commit-tree", tree, "-p", head, "-m", f"filler {i}"], cwd=root, check=True,
                              capture_output=True, text=True).stdout.strip()
    subprocess.run(["git", "update-ref", "refs/heads/main", head], cwd=root, check=True)
    code, out, err = _cli(flow, "history", "--json")
    assert code == 1, (out, err)
    assert [u["commit"] for u in json.loads(out)["unattested"]] == [edit], out


def test_a_patched_kustomization_is_reported_not_deployed_unseen(flow: Flow) -> None:
    """A `patches:` entry in prod's kustomization.yaml made Argo CD deploy greeter 1.1.0 in prod (`kubectl kustomize`
    gives it) while `status`, reading the stage files alone, showed 1.0.0 and exited 0. A kustomization that is not
    exactly what promote writes refuses its stage in `status` (comments are free)."""
    path = flow.ctx.env.root / "deploy/envs/prod/kustomization.yaml"
    original = path.read_text()
    path.write_text(original + "# a comment changes nothing\n")
    code, out, err = _cli(flow, "status", "--no-verify", "--json")
    assert code == 0, (out, err)
    path.write_text(original + "patches:\n- target: {kind: WasmAgent, name: greeter}\n  patch: |-\n"
                    f"    - op: replace\n      path: /spec/agent\n      value: greeter@{flow.v2}\n")
    code, out, err = _cli(flow, "status", "--no-verify", "--json")
    assert code == 1, (out, err)
    rows = [r for r in json.loads(out)["placements"] if r["stage"] == "prod" and r["allowed"] is False]
    assert rows and "kustomization.yaml is not what promote writes (it adds patches)" in rows[0]["verdict"], out


@pytest.mark.parametrize("name", ["aaa\x01zzz", "PARENT", "a\nb", 'q"uote', "caf\u00e9 \\ \t"])
def test_a_file_name_cannot_hide_the_stage_files_changed_beside_it(flow: Flow, name: str) -> None:
    """`history` reads every commit's files from one `git log`. A file named with the stream's own separator (a
    control character), or after the parent commit's hash, changed beside a hand edit must not cut the edit off its
    commit: with `-z` and a \\x01 marker, `aaa\\x01zzz` hid it and `history` exited 0."""
    root = flow.ctx.env.root
    if name == "PARENT":
        name = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, check=True, capture_output=True,
                              text=True).stdout.strip()
    (root / name).write_text("decoy\n")
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    edit = _forge(flow, "tidy", touch="prod")
    code, out, err = _cli(flow, "history", "--json")
    assert code == 1, (out, err)
    flagged = {u["commit"]: u for u in json.loads(out)["unattested"]}
    assert edit in flagged and "deploy/envs/prod/kustomization.yaml" in flagged[edit]["paths"], flagged
