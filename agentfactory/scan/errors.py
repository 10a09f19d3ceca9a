"""Why an external scanner (Grype, Trivy) gave no answer, kept apart from malformed input.

A missing binary is an installation matter the user fixes with a package manager; a failed or
timed-out run is a scanner problem. Neither is an `InputError`: the SBOM may be fine.
"""

from __future__ import annotations

from ..errors import AgentFactoryError


class ScannerUnavailable(AgentFactoryError):
    """The scanner binary is not on PATH: install it, or use the embedded OSV matcher."""


class ScannerFailed(AgentFactoryError):
    """The scanner ran but failed, timed out, or answered more than we accept."""
