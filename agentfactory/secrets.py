"""Secrets the node injects into an agent's outbound requests: read by the node, never shown to the agent.

Two sources, chosen by the node's operator (`agentfactory runtime serve --secrets …`):

- `vault`: Vault / OpenBao KV version 2, one path per agent (`<mount>/data/<prefix>/<agent>`, by
  default `secret/data/agentfactory/agents/<agent>`), each key of that secret one secret name, read
  with the node's own token (`VAULT_ADDR`, `VAULT_TOKEN`, `VAULT_CACERT`, `VAULT_NAMESPACE`). Values
  are cached per agent for `ttl` seconds, so a rotation takes effect within it; failures are not
  cached, and any failure refuses the request that needed the secret (fail closed);
- `env`: `AGENTFACTORY_SECRET_<AGENT>_<NAME>` (upper case, `-` as `_`), for a laptop only: the
  operator enables it explicitly.

A value is held in a `Secret`, whose repr and str never show it, and must be printable ASCII (it
becomes an HTTP header: a CR or LF would let it forge headers). Error messages name the agent, the
secret and where it was looked for, never a value.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

from .errors import AgentFactoryError, ConfigError

MAX_SECRET_CHARS = 8192
MIN_SECRET_CHARS = 8  # a shorter value could not be told apart from ordinary text when it is redacted
MAX_KEYS = 64  # keys read from one agent's KV secret
MAX_AGENTS_CACHED = 256
DEFAULT_MOUNT = "secret"
DEFAULT_PREFIX = "agentfactory/agents"
DEFAULT_TTL = 30.0
DEFAULT_TIMEOUT = 5.0
ENV_PREFIX = "AGENTFACTORY_SECRET_"
_PRINTABLE = re.compile(r"[\x20-\x7e]+")
_MOUNT = re.compile(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*")


class SecretError(AgentFactoryError):
    """A secret could not be had; the message names the agent, the secret and the source, never a value."""


class Secret:
    """A secret value that does not print itself (repr, str, format and logging show its name only)."""

    __slots__ = ("_value", "name")

    def __init__(self, name: str, value: str) -> None:
        self.name = name
        self._value = value

    def reveal(self) -> str:
        """The value: only for the one place that writes it into a request."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret({self.name!r}, <hidden>)"

    __str__ = __repr__

    def __reduce__(self) -> Any:  # never pickled (a worker process, a cache file)
        raise TypeError("a Secret is not serialisable")


class SecretSource(Protocol):
    def describe(self) -> str:
        """Where secrets come from, for messages (no token)."""
        ...

    def read(self, agent: str, names: Iterable[str], timeout: float) -> dict[str, Secret]:
        """The named secrets of `agent`; SecretError naming the first that cannot be had."""
        ...


def check_value(agent: str, name: str, value: Any, where: str) -> Secret:
    if not isinstance(value, str):
        raise SecretError(f"secret {name!r} of agent {agent!r} at {where} is not a string")
    if not MIN_SECRET_CHARS <= len(value) <= MAX_SECRET_CHARS or not _PRINTABLE.fullmatch(value):
        raise SecretError(f"secret {name!r} of agent {agent!r} at {where} must be {MIN_SECRET_CHARS} to "
                          f"{MAX_SECRET_CHARS} printable "
                          "ASCII characters (it is sent as an HTTP header value; no CR, LF or other controls)")
    return Secret(name, value)


class EnvSecrets:
    """`AGENTFACTORY_SECRET_<AGENT>_<NAME>`: for a laptop, enabled explicitly (`--secrets env`)."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self.environ = environ if environ is not None else os.environ

    @staticmethod
    def variable(agent: str, name: str) -> str:
        return ENV_PREFIX + f"{agent}_{name}".upper().replace("-", "_")

    def describe(self) -> str:
        return f"environment variables {ENV_PREFIX}<AGENT>_<NAME>"

    def read(self, agent: str, names: Iterable[str], timeout: float) -> dict[str, Secret]:
        out = {}
        for name in names:
            var = self.variable(agent, name)
            value = self.environ.get(var)
            if value is None:
                raise SecretError(f"secret {name!r} of agent {agent!r} is not set: this node reads it from the "
                                  f"environment variable {var} (--secrets env)")
            out[name] = check_value(agent, name, value, var)
        return out


class VaultKV2Secrets:
    """Vault / OpenBao KV v2: one secret per agent, read with the node's token, cached for `ttl` seconds."""

    def __init__(self, addr: str, token: str, *, mount: str = DEFAULT_MOUNT, prefix: str = DEFAULT_PREFIX,
                 cacert: str | None = None, namespace: str | None = None, timeout: float = DEFAULT_TIMEOUT,
                 ttl: float = DEFAULT_TTL) -> None:
        import hvac

        if not re.fullmatch(r"https?://[^/\s]+", addr.rstrip("/")):
            raise ConfigError(f"VAULT_ADDR={addr!r}: expected http(s)://HOST[:PORT]")
        if not token:
            raise ConfigError("VAULT_TOKEN is not set: the node reads agents' secrets with its own token")
        for what, value in (("mount", mount), ("prefix", prefix)):
            if not _MOUNT.fullmatch(value) or ".." in value.split("/"):
                raise ConfigError(f"secrets {what} {value!r}: a Vault path (letters, digits, '_', '.', '-', '/')")
        if cacert is not None and not Path(cacert).is_file():
            raise ConfigError(f"VAULT_CACERT={cacert!r}: no such file")
        if not 0 < timeout <= 300 or not 0 <= ttl <= 3600:
            raise ConfigError(f"secrets timeout {timeout!r} s (0..300) or ttl {ttl!r} s (0..3600) out of range")
        self.addr, self.mount, self.prefix = addr.rstrip("/"), mount, prefix
        self.timeout, self.ttl = timeout, ttl
        self._client = hvac.Client(url=self.addr, token=token, verify=cacert or True, timeout=timeout,
                                   namespace=namespace)
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, tuple[float, dict[str, Secret | SecretError]]] = OrderedDict()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **kwargs: Any) -> VaultKV2Secrets:
        env = environ if environ is not None else os.environ
        addr = env.get("VAULT_ADDR", "").strip()
        if not addr:
            raise ConfigError("VAULT_ADDR is not set: point it at the Vault or OpenBao server holding agents' "
                              "secrets (--secrets vault)")
        return cls(addr, env.get("VAULT_TOKEN", ""), cacert=env.get("VAULT_CACERT") or None,
                   namespace=env.get("VAULT_NAMESPACE") or None, **kwargs)

    def path(self, agent: str) -> str:
        return f"{self.prefix}/{agent}"

    def describe(self) -> str:
        return f"Vault KV v2 at {self.addr}, {self.mount}/data/{self.prefix}/<agent>"

    def read(self, agent: str, names: Iterable[str], timeout: float) -> dict[str, Secret]:
        wanted = list(names)
        where = f"{self.addr} {self.mount}/data/{self.path(agent)}"
        with self._lock:
            cached = self._cache.get(agent)
            if cached is None or time.monotonic() - cached[0] >= self.ttl:
                cached = (time.monotonic(), self._fetch(agent, where, timeout))
                self._cache[agent] = cached
                while len(self._cache) > MAX_AGENTS_CACHED:
                    self._cache.popitem(last=False)
            self._cache.move_to_end(agent)
        found = cached[1]
        missing = [n for n in wanted if n not in found]
        if missing:
            raise SecretError(f"secret {missing[0]!r} of agent {agent!r} is not a key of {where}; add it there "
                              "(`bao kv patch`)")
        out = {}
        for name in wanted:
            value = found[name]
            if isinstance(value, SecretError):
                raise SecretError(str(value))
            out[name] = value
        return out

    def _fetch(self, agent: str, where: str, timeout: float) -> dict[str, Secret | SecretError]:
        import hvac.exceptions
        import requests

        if timeout <= 0:
            raise SecretError(f"no time left to read the secrets of agent {agent!r} from {where}")
        self._client.adapter.timeout = min(self.timeout, timeout)
        try:
            answer = self._client.secrets.kv.v2.read_secret_version(
                path=self.path(agent), mount_point=self.mount, raise_on_deleted_version=True)
        except hvac.exceptions.InvalidPath:
            raise SecretError(f"agent {agent!r} has no secrets at {where} (or the mount is not KV v2)") from None
        except (hvac.exceptions.Forbidden, hvac.exceptions.Unauthorized):
            raise SecretError(f"the node's token may not read {where}: grant it `read` on "
                              f"{self.mount}/data/{self.prefix}/*") from None
        except requests.exceptions.Timeout:
            raise SecretError(f"Vault did not answer within {min(self.timeout, timeout):.3g} s reading "
                              f"{where}") from None
        except requests.exceptions.RequestException as exc:
            raise SecretError(f"cannot reach Vault to read {where} ({type(exc).__name__})") from None
        except hvac.exceptions.VaultError as exc:
            raise SecretError(f"Vault refused to read {where} ({type(exc).__name__})") from None
        data = answer.get("data", {}).get("data") if isinstance(answer, dict) else None
        if not isinstance(data, dict):
            raise SecretError(f"{where} is not a KV v2 secret (no data.data object)")
        if len(data) > MAX_KEYS:
            raise SecretError(f"{where} holds {len(data)} keys; at most {MAX_KEYS} are read")
        out: dict[str, Secret | SecretError] = {}
        for key, value in data.items():  # a bad value refuses only the requests that need it
            try:
                out[str(key)] = check_value(agent, str(key), value, where)
            except SecretError as exc:
                out[str(key)] = exc
        return out
