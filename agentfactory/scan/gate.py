"""Which findings block a release: the gate `--fail-on` and the artifact policy's config describe.

Its own module, apart from the scan report, so that `pipeline run` on unchanged templates, which only
reads the gate's options, does not import the report, VEX and attestation code (issue 23, start-up).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from .model import SEVERITIES, Finding, severity_rank

FAIL_ON = ("critical", "high", "medium", "low", "unknown", "none")


@dataclass(frozen=True)
class Gate:
    """Which findings block: unsuppressed ones at or above `fail_on` (default high: no Critical or
    High that no VEX statement answers). `ignore_unfixed` lets through findings with no published fix,
    as Trivy's --ignore-unfixed does; off by default, because unfixable is not harmless."""

    fail_on: str = "high"
    ignore_unfixed: bool = False
    exactly: tuple[str, ...] | None = None  # the policy's own list, when it is not "this and above"

    def __post_init__(self) -> None:
        if self.fail_on not in FAIL_ON:
            raise ConfigError(f"--fail-on {self.fail_on!r}: choose one of {', '.join(FAIL_ON)}")

    @classmethod
    def from_policy(cls, config: Any) -> Gate:
        """The gate the artifact policy's config describes (blocking_severities, ignore_unfixed), so a
        report says what the policy will decide."""
        cfg = config if isinstance(config, dict) else {}
        listed = cfg.get("blocking_severities")
        severities = tuple(str(x).lower() for x in listed) if isinstance(listed, list) else ("high", "critical")
        unfixed = cfg.get("ignore_unfixed") is True
        for level in FAIL_ON:
            if sorted(severities) == sorted(cls(level).severities):
                return cls(level, unfixed)
        lowest = min(severities, key=severity_rank, default="none")
        return cls(lowest if lowest in FAIL_ON else "none", unfixed, exactly=severities)

    @property
    def severities(self) -> list[str]:
        """The severities that block, as the artifact policy's blocking_severities."""
        if self.exactly is not None:
            return list(self.exactly)
        if self.fail_on == "none":
            return []
        if self.fail_on == "unknown":
            return list(SEVERITIES)
        return [s for s in SEVERITIES if s != "unknown" and severity_rank(s) >= severity_rank(self.fail_on)]

    def blocks(self, finding: Finding) -> bool:
        return (not finding.suppressed and finding.severity in self.severities
                and not (self.ignore_unfixed and not finding.fixed))

    def blocking(self, findings: Sequence[Finding]) -> list[Finding]:
        return [f for f in findings if self.blocks(f)]
