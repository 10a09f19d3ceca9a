"""SLSA Provenance v1 predicates: how an agent was built, from what, by whom.

The pipeline fills it from its build record; the verifier reads the builder id and the
source repository back to hold them against the trust policy. `internalParameters.compile`
records the compile check (validated under which proposals, the budget, the seconds and MiB it
took), so the cost of compiling an agent is attested with it; readers ignore fields they do not use.
"""

from __future__ import annotations

from typing import Any

from .errors import InputError

BUILD_TYPE = "https://agentfactory.dev/build/wasi/v1"
DEFAULT_BUILDER_ID = "https://agentfactory.dev/builders/pipeline/local"


def predicate(build: dict[str, Any], *, builder_id: str) -> dict[str, Any]:
    """A SLSA v1 predicate from the pipeline's build record (see docs/cli.md, `build`)."""
    repo, commit = build.get("repository"), build.get("commit")
    resolved: list[dict[str, Any]] = []
    if repo and build.get("templateCommit"):
        resolved.append({"uri": f"git+{repo}@{build['templateCommit']}", "name": "template-commit",
                         "digest": {"gitCommit": build["templateCommit"]}})
    for path, sha in sorted(build.get("inputs", {}).items()):
        resolved.append({"uri": f"file:{build.get('templatePath', '.')}/{path}", "name": path,
                         "digest": {"sha256": sha}})
    for dep in build.get("dependencies", []):
        resolved.append({"uri": dep["purl"], "name": dep["name"], "digest": {"sha256": dep["sha256"]}})
    toolchain = build.get("toolchain", {})
    if toolchain.get("package"):
        name, _, version = toolchain["package"].partition("==")
        resolved.append({"uri": f"pkg:pypi/{name}@{version}", "name": toolchain.get("name", name)})
    return {
        "buildDefinition": {
            "buildType": BUILD_TYPE,
            # name and version: what the verifier binds a reference (`name:version`, a tag) to.
            "externalParameters": {"repository": repo, "commit": commit, "templatePath": build.get("templatePath"),
                                   **{k: build[k] for k in ("name", "version") if build.get(k)},
                                   "agent": build.get("agent")},
            "internalParameters": {"toolchain": toolchain, "sourceDateEpoch": build.get("sourceDateEpoch"),
                                   "dirty": build.get("dirty", False), **_compile(build)},
            "resolvedDependencies": resolved,
        },
        "runDetails": {
            "builder": {"id": builder_id, "version": {"agentfactory": build.get("builder", {}).get("version", "")}},
            "metadata": {"startedOn": build.get("startedOn"), "finishedOn": build.get("finishedOn")},
        },
    }


def _compile(build: dict[str, Any]) -> dict[str, Any]:
    """The compile check's record (validated, budget, seconds, memory), when the pipeline made one."""
    record = build.get("compile")
    return {"compile": record} if isinstance(record, dict) else {}


def builder_and_source(pred: Any, where: str) -> tuple[str, str | None]:
    """(builder id, source repository) of a SLSA v1 predicate; InputError when malformed."""
    try:
        builder = pred["runDetails"]["builder"]["id"]
        repo = pred["buildDefinition"]["externalParameters"].get("repository")
    except (KeyError, TypeError, AttributeError):
        raise InputError(where, "not a SLSA Provenance v1 predicate (runDetails.builder.id, "
                                "buildDefinition.externalParameters)") from None
    if not isinstance(builder, str) or not (repo is None or isinstance(repo, str)):
        raise InputError(where, "builder id and repository must be strings")
    return builder, repo
