"""The node's http.fetch settings from the command line: what agents may reach, and where secrets come from.

`http_node_options` adds the flags to `agentfactory run` and `agentfactory runtime serve`; like the
policy-engine options they keep their values in the click context, so the commands' own signatures
do not change, and `node_from_context` builds the node's `HttpNode` from them. The defaults refuse:
no plain http, no loopback, no private addresses, no secrets. `policy_config` is what the template
policy reads as `config.node.http`, so the policy judges by this node's settings.

| flag | environment | default |
| --- | --- | --- |
| `--http-allow-plain-http` | `AGENTFACTORY_HTTP_ALLOW_PLAIN_HTTP` | off |
| `--http-allow-loopback` | `AGENTFACTORY_HTTP_ALLOW_LOOPBACK` | off |
| `--http-allow-private` | `AGENTFACTORY_HTTP_ALLOW_PRIVATE` | off |
| `--http-ca-file` | `AGENTFACTORY_HTTP_CA_FILE` | the system's trust roots |
| `--http-dns-server IP[:PORT]` | `AGENTFACTORY_HTTP_DNS_SERVER` | the system resolver |
| `--http-connect-to HOST:PORT=IP:PORT` (repeatable) | `AGENTFACTORY_HTTP_CONNECT_TO` (space-separated) | none |
| `--http-max-requests`, `--http-max-response-kib` | `AGENTFACTORY_HTTP_MAX_…` | 32, 4096 |
| `--http-max-request-kib`, `--http-max-timeout-ms` | `AGENTFACTORY_HTTP_MAX_…` | 1024, 30000 |
| `--secrets none\\|vault\\|env` | `AGENTFACTORY_SECRETS` | none |
| `--secrets-mount`, `--secrets-prefix` | `AGENTFACTORY_SECRETS_MOUNT`, `…_PREFIX` | `secret`, `agentfactory/agents` |
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from agentfactory.errors import ConfigError
from agentfactory.secrets import DEFAULT_MOUNT, DEFAULT_PREFIX, EnvSecrets, SecretSource, VaultKV2Secrets

if TYPE_CHECKING:  # imported when a node is built, not when the command line is parsed (CLI start-up time)
    from .http_fetch import HttpNode, HttpSettings
    from .http_resolve import Resolver

F = TypeVar("F", bound=Callable[..., Any])
_KEY = "agentfactory.http_node"


def _remember(name: str) -> Callable[[click.Context, click.Parameter, Any], Any]:
    def callback(ctx: click.Context, _param: click.Parameter, value: Any) -> Any:
        ctx.meta.setdefault(_KEY, {})[name] = value
        return value
    return callback


def _flag(name: str, env: str, text: str) -> Callable[[F], F]:
    return click.option(f"--http-{name.replace('_', '-')}", is_flag=True, default=False, envvar=env,
                        expose_value=False, callback=_remember(name), help=text)


def _number(name: str, env: str, low: int, high: int, default: int, text: str) -> Callable[[F], F]:
    return click.option(f"--http-{name.replace('_', '-')}", type=click.IntRange(low, high), default=default,
                        show_default=True, envvar=env, expose_value=False, callback=_remember(name), help=text)


def http_node_options(func: F) -> F:
    options: list[Callable[[F], F]] = [
        _flag("allow_plain_http", "AGENTFACTORY_HTTP_ALLOW_PLAIN_HTTP",
              "Let agents' http.fetch use plain http (default: https only; secrets are never sent over http)."),
        _flag("allow_loopback", "AGENTFACTORY_HTTP_ALLOW_LOOPBACK",
              "Let agents' http.fetch reach loopback addresses (127.0.0.0/8, ::1): for tests and demos."),
        _flag("allow_private", "AGENTFACTORY_HTTP_ALLOW_PRIVATE",
              "Let agents' http.fetch reach private addresses (RFC 1918, CGNAT, ULA); metadata and link-local "
              "addresses stay refused."),
        click.option("--http-ca-file", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
                     envvar="AGENTFACTORY_HTTP_CA_FILE", expose_value=False, callback=_remember("ca_file"),
                     help="PEM trust roots for agents' outbound TLS (default: the system's)."),
        click.option("--http-dns-server", default=None, metavar="IP[:PORT]", envvar="AGENTFACTORY_HTTP_DNS_SERVER",
                     expose_value=False, callback=_remember("dns_server"),
                     help="Resolve agents' hosts with this DNS server (UDP) instead of the system resolver."),
        click.option("--http-connect-to", multiple=True, metavar="HOST:PORT=IP:PORT",
                     envvar="AGENTFACTORY_HTTP_CONNECT_TO", expose_value=False, callback=_remember("connect_to"),
                     help="Send agents' requests for HOST:PORT to IP:PORT instead of resolving HOST (as curl's "
                          "--connect-to; a sidecar, a test server). The address is judged like a resolved one and "
                          "TLS is still verified for HOST. Repeatable."),
        _number("max_requests", "AGENTFACTORY_HTTP_MAX_REQUESTS", 1, 100_000, 32,
                "Ceiling on spec.http.limits.maxRequests (requests per invocation)."),
        _number("max_response_kib", "AGENTFACTORY_HTTP_MAX_RESPONSE_KIB", 1, 1_048_576, 4096,
                "Ceiling on spec.http.limits.maxResponseKiB."),
        _number("max_request_kib", "AGENTFACTORY_HTTP_MAX_REQUEST_KIB", 1, 1_048_576, 1024,
                "Ceiling on spec.http.limits.maxRequestKiB."),
        _number("max_timeout_ms", "AGENTFACTORY_HTTP_MAX_TIMEOUT_MS", 1, 600_000, 30_000,
                "Ceiling on spec.http.limits.timeoutMs."),
        click.option("--secrets", "secrets_source", type=click.Choice(["none", "vault", "env"]), default="none",
                     show_default=True, envvar="AGENTFACTORY_SECRETS", expose_value=False,
                     callback=_remember("secrets"),
                     help="Where agents' secrets (spec.secrets) come from: Vault/OpenBao KV v2 with the node's "
                          "VAULT_ADDR and VAULT_TOKEN, or AGENTFACTORY_SECRET_<AGENT>_<NAME> variables (a laptop "
                          "only)."),
        click.option("--secrets-mount", default=DEFAULT_MOUNT, show_default=True,
                     envvar="AGENTFACTORY_SECRETS_MOUNT", expose_value=False, callback=_remember("secrets_mount"),
                     help="KV v2 mount holding agents' secrets."),
        click.option("--secrets-prefix", default=DEFAULT_PREFIX, show_default=True,
                     envvar="AGENTFACTORY_SECRETS_PREFIX", expose_value=False, callback=_remember("secrets_prefix"),
                     help="Path under the mount: an agent's secrets are at <prefix>/<agent>."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _values() -> dict[str, Any]:
    ctx = click.get_current_context(silent=True)
    found = ctx.meta.get(_KEY) if ctx is not None else None
    return found if isinstance(found, dict) else {}


def settings_from_context() -> HttpSettings:
    """The node's http settings from this command's flags (the defaults outside a command)."""
    from .http_fetch import HttpSettings

    v = _values()
    defaults = HttpSettings()
    return HttpSettings(
        allow_plain_http=bool(v.get("allow_plain_http", False)), allow_loopback=bool(v.get("allow_loopback", False)),
        allow_private=bool(v.get("allow_private", False)),
        max_requests=v.get("max_requests") or defaults.max_requests,
        max_response_kib=v.get("max_response_kib") or defaults.max_response_kib,
        max_request_kib=v.get("max_request_kib") or defaults.max_request_kib,
        max_timeout_ms=v.get("max_timeout_ms") or defaults.max_timeout_ms,
        ca_file=v.get("ca_file"), connect_to=tuple(parse_connect_to(t) for t in v.get("connect_to") or ()))


def parse_connect_to(text: str) -> tuple[str, int, str, int]:
    """`HOST:PORT=IP:PORT` (an IPv6 address in brackets) as (host, port, address, port); ConfigError naming it."""
    import ipaddress

    from agentfactory.httpgrant import UrlError, parse_binding_host

    def port_of(value: str) -> int:
        if not (value.isdigit() and 0 < int(value) < 65536):
            raise ConfigError(f"--http-connect-to {text!r}: port {value!r} is not a number from 1 to 65535")
        return int(value)

    source, eq, target = text.partition("=")
    host, _, port = source.rpartition(":")
    address, _, to_port = target.rpartition(":")
    if not (eq and host and address):
        raise ConfigError(f"--http-connect-to {text!r}: write HOST:PORT=IP:PORT, e.g. "
                          "models.example.com:443=127.0.0.1:8443")
    try:
        name, _ = parse_binding_host(host)
    except UrlError as exc:
        raise ConfigError(f"--http-connect-to {text!r}: host {host!r}: {exc}") from None
    if name.startswith("*."):
        raise ConfigError(f"--http-connect-to {text!r}: name one host, not a wildcard")
    try:
        ip = ipaddress.ip_address(address[1:-1] if address.startswith("[") and address.endswith("]") else address)
    except ValueError:
        raise ConfigError(f"--http-connect-to {text!r}: {address!r} is not an IP address") from None
    return name, port_of(port), str(ip), port_of(to_port)


def secrets_from(kind: str, mount: str = DEFAULT_MOUNT, prefix: str = DEFAULT_PREFIX) -> SecretSource | None:
    if kind == "vault":
        return VaultKV2Secrets.from_env(mount=mount, prefix=prefix)
    if kind == "env":
        return EnvSecrets()
    if kind == "none":
        return None
    raise ConfigError(f"--secrets {kind!r}: use none, vault or env")


def resolver_from(server: str | None) -> Resolver | None:
    from .http_resolve import DnsServerResolver

    if not server:
        return None
    host, _, port = server.rpartition(":") if server.count(":") == 1 else (server, "", "")
    try:
        return DnsServerResolver(host or server, int(port) if port else 53)
    except ValueError as exc:
        raise ConfigError(f"--http-dns-server {server!r}: {exc}") from None


def node_from_context() -> HttpNode:
    """The node's HttpNode from this command's flags; ConfigError when a setting is unusable."""
    from .http_fetch import HttpNode

    v = _values()
    return HttpNode(settings_from_context(),
                    secrets_from(v.get("secrets") or "none", v.get("secrets_mount") or DEFAULT_MOUNT,
                                 v.get("secrets_prefix") or DEFAULT_PREFIX),
                    resolver=resolver_from(v.get("dns_server")))
