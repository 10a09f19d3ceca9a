"""Promotion records the transparency log knows of: neither a copy logged later nor a removed referrer moves a stage.

The verifier judges a stage by the newest promotion record of the store (agentfactory/verifier.py
`promotion_state`), placed by the log. Two things a store writer could do without any key, where the
trust policy gives a log's URL the log is asked about both:

- **Replay.** Re-encode an old, genuine "promote to canary" envelope (its signature listed twice),
  POST the copy to the log (anyone can, as to public Rekor) and attach it: the copy's entry is newer
  than the withdrawal that followed the promotion. A record is its signed statement, so it is placed at
  the statement's *first* entry the log holds, whichever envelope bytes the store carries.
- **Removal.** Delete the withdrawal's referrer from the store. Every promotion record is logged, so a
  record by a promoter key about this digest that the log holds, the store lacks and that is newer than
  the record the stage is judged by may be that withdrawal: the stage is refused until the store holds
  it again (re-attach the referrer).

Entries are found by the digest (the log indexes dsse payload subjects), checked offline against the
pinned log key, and count only when a trusted, non-revoked promoter key verified them; see
agentfactory/scan/logged.py, which does the same for scans.
"""

from __future__ import annotations

import dataclasses

from .errors import AgentFactoryError
from .evidence import Evidence
from .scan.logged import LoggedAttestation, logged_attestations, payload_sha256
from .trust import TrustPolicy
from .verifier import PromotionRecord


def check_logged_promotions(digest: str, policy: TrustPolicy, records: list[PromotionRecord], evidence: Evidence,
                            stage: str) -> tuple[list[PromotionRecord], str | None]:
    """`records` placed at their statements' first entries in the policy's logs, and why `stage` cannot be
    judged (a newer logged promotion record missing from the store, or a log that cannot answer), else None."""
    from .tlog.client import RekorClient

    found: list[LoggedAttestation] = []
    for url in policy.log_urls.values():
        try:
            with RekorClient(url) as client:
                found.extend(logged_attestations(client, digest, policy, keys=policy.promoters))
        except (AgentFactoryError, ValueError, TypeError) as exc:  # fail closed, the unforeseen too
            problem = str(exc) if isinstance(exc, AgentFactoryError) else f"{type(exc).__name__}: {exc}"
            return records, f"the transparency log could not be asked for promotion records: {problem}"
    placed = [_first_entry(r, found) for r in records]
    held = {h for h in (payload_sha256(doc) for _, doc in evidence.attestations) if h is not None}
    current = max((r for r in placed if r.claim.stage == stage), key=lambda r: r.order, default=None)
    missing = [a for a in found if a.payload_sha256 not in held
               and (current is None or (a.integrated_time, a.log_index) > current.order)]
    if not missing:
        return placed, None
    newest = max(missing, key=lambda a: (a.integrated_time, a.log_index))
    after = f"after the record {stage} is judged by (log index {current.log_index})" if current else "about it"
    return placed, (f"a promotion record (log index {newest.log_index} in {newest.log_url}, by promoter "
                    f"{newest.key_id[:16]}…) was logged {after} and is missing from the store: it may be a withdrawal "
                    "that was removed; re-attach it before this digest counts as promoted to " + stage)


def _first_entry(record: PromotionRecord, found: list[LoggedAttestation]) -> PromotionRecord:
    """`record` placed at its statement's earliest entry in the same log, when the log holds an earlier one."""
    same = [a for a in found if a.payload_sha256 == record.payload_sha256 and a.log_id == record.log_id]
    first = min(same, key=lambda a: (a.integrated_time, a.log_index), default=None)
    if first is None or (first.integrated_time, first.log_index) >= record.order:
        return record
    return dataclasses.replace(record, log_index=first.log_index, integrated_time=first.integrated_time)
