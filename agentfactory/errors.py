"""One exception family, so that every plane can fail closed on `AgentFactoryError`.

Messages say what failed, where (file, field or line) and, when it helps, what to do.
"""

from __future__ import annotations


class AgentFactoryError(Exception):
    """Root of every error this project raises on purpose."""


class ConfigError(AgentFactoryError):
    """A setting (environment variable, flag, URL) is malformed."""


class InputError(AgentFactoryError):
    """A file we were given is malformed, too large or hostile.

    `where` names the file and, when known, the line or field: ``templates/x/agent.yaml:12``.
    """

    def __init__(self, where: str, message: str) -> None:
        self.where = where
        self.message = message
        super().__init__(f"{where}: {message}")


class TemplateError(InputError):
    """A template breaks the template contract (syntax, schema, sources, dependencies)."""


class BuildError(AgentFactoryError):
    """The toolchain refused a template; `diagnostics` holds what the compiler said."""

    def __init__(self, where: str, message: str, diagnostics: str = "") -> None:
        self.where = where
        self.diagnostics = diagnostics
        text = f"{where}: {message}"
        if diagnostics:
            text += "\n" + diagnostics.rstrip()
        super().__init__(text)


class StoreError(AgentFactoryError):
    """The artifact store is unreachable, corrupt, or does not hold what was asked for."""


class NotFoundError(StoreError):
    """A reference (name, tag or digest) resolves to nothing in the store."""


class DigestMismatchError(StoreError):
    """Bytes do not hash to the digest that names them: tampering or corruption."""


class ValidationFailed(AgentFactoryError):
    """Several problems found at once, reported together so an author fixes them in one go."""

    def __init__(self, problems: list[InputError]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class KeyProviderError(AgentFactoryError):
    """A signing-key provider (keyring folder, Vault/OpenBao Transit) refused or is unusable."""
