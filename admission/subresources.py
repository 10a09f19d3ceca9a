"""Every subresource the API server can send, decided one by one (DESIGN.md invariant 9).

A rule for `pods` does not match `pods/ephemeralcontainers`, and a webhook that ignores
`request.subResource` judges whatever object comes with it as if it were a plain write. So each
subresource has an explicit decision here, with the reason the webhook gives and docs/admission.md
repeats (a test holds the two together):

- JUDGE: the object is judged exactly like a write of the resource itself;
- ALLOW: it cannot change what runs, so it is admitted; as a safety net, when the new object carries
  agent references that the old one did not, it is judged anyway;
- REFUSE: refused whenever the webhook is sent one (the default rules do not send them).

A subresource not in the table is refused on an agent workload (fail closed) and admitted on
anything else.
"""

from __future__ import annotations

from dataclasses import dataclass

JUDGE, ALLOW, REFUSE = "judged", "allowed", "refused"


@dataclass(frozen=True)
class SubresourceRule:
    decision: str
    why: str


SUBRESOURCES: dict[str, SubresourceRule] = {
    "": SubresourceRule(JUDGE, "the resource itself: every agent reference in the object is judged"),
    "ephemeralcontainers": SubresourceRule(
        JUDGE, "kubectl debug adds containers to a running pod through it; the whole pod is judged, its "
               "ephemeral containers included (sent by the default rules: pods/ephemeralcontainers)"),
    "status": SubresourceRule(
        ALLOW, "a status write: the API server keeps the stored spec, so no image changes; a pod's status "
               "write may still change its annotations, so new agent references in it are judged"),
    "resize": SubresourceRule(
        ALLOW, "an in-place resize changes only the CPU and memory of running containers, never an image"),
    "scale": SubresourceRule(
        ALLOW, "changes only the replica count: more copies of a pod template that was judged when written"),
    "binding": SubresourceRule(
        ALLOW, "the scheduler binds a pod to a node: it changes where a judged pod runs, not what it runs"),
    "eviction": SubresourceRule(
        ALLOW, "removes a pod, like a DELETE: nothing new runs, and a bad pod can always be removed"),
    "exec": SubresourceRule(
        REFUSE, "kubectl exec starts a process inside a running pod, outside anything the artifact's evidence "
                "covers, and the review names only the pod, not what runs in it; not sent by the default "
                "rules, so RBAC (create on pods/exec) decides; register it for namespaces that run agents "
                "to forbid it there"),
    "attach": SubresourceRule(
        REFUSE, "kubectl attach feeds stdin to a running agent's process, outside its declared inputs; not "
                "sent by the default rules, so RBAC (create on pods/attach) decides; register it for "
                "namespaces that run agents to forbid it there"),
}

UNKNOWN_WHY = ("a subresource the webhook has no decision for; on an agent workload it is refused (fail "
               "closed): add it to admission/subresources.py with its reason")


def rule_for(sub_resource: str) -> SubresourceRule | None:
    """The decision for `sub_resource` ("" for the resource itself), None when it is not known."""
    return SUBRESOURCES.get(sub_resource)
