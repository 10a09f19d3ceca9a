"""Which policy engine a command judges with: regopy in-process (default), an OPA server, or the policies
compiled to Wasm by OPA and evaluated in-process (`opa-wasm`, agentfactory/policy_wasm.py).

Every command that judges (template, verify, policy, pipeline, promote, admission, run, ci check)
takes `--policy-engine [rego|opa|opa-wasm]` and `--opa-url URL` (`policy_engine_options`; environment
AGENTFACTORY_POLICY_ENGINE and AGENTFACTORY_OPA_URL) and builds its engine with `open_engine`.
The options remember their values in the click context, so a command's own code only swaps
`RegoEngine(...)` for `open_engine(...)`; outside a command (or one without the options) the
environment decides, and nothing set means regopy.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from .errors import ConfigError
from .policy import PolicyEngine, RegoEngine

ENGINE_ENV = "AGENTFACTORY_POLICY_ENGINE"
OPA_URL_ENV = "AGENTFACTORY_OPA_URL"
OPA_TIMEOUT_ENV = "AGENTFACTORY_OPA_TIMEOUT"
ENGINES = ("rego", "opa", "opa-wasm")
_ENGINE_KEY = "agentfactory.policy_engine"
_URL_KEY = "agentfactory.opa_url"

F = TypeVar("F", bound=Callable[..., Any])


def open_engine(policies_dir: Path | None, *, engine: str | None = None, opa_url: str | None = None,
                config: dict[str, Any] | None = None) -> PolicyEngine:
    """The engine asked for: `engine` ("rego", "opa" or "opa-wasm"), else the command's --policy-engine, else
    $AGENTFACTORY_POLICY_ENGINE, else "rego". With "opa", the server is `opa_url`, else the command's
    --opa-url, else $AGENTFACTORY_OPA_URL, else http://localhost:8181. `config` overrides keys of
    data.agentfactory.config for either engine (an OPA server must already hold them: policy_opa).
    A URL given while the engine is rego is a ConfigError: it would silently not be used."""
    chosen = (engine or _from_context(_ENGINE_KEY) or os.environ.get(ENGINE_ENV) or "rego").strip().lower()
    url = opa_url or _from_context(_URL_KEY) or os.environ.get(OPA_URL_ENV) or None
    if chosen not in ENGINES:
        raise ConfigError(f"policy engine {chosen!r} (--policy-engine / ${ENGINE_ENV}) is unknown: "
                          f"use {' or '.join(ENGINES)}")
    if chosen == "rego":
        if url:
            raise ConfigError(f"--opa-url / ${OPA_URL_ENV} is set ({url}) but the policy engine is rego: add "
                              f"--policy-engine opa (or {ENGINE_ENV}=opa) to judge through that OPA server, "
                              "or drop the URL")
        return RegoEngine(policies_dir, config=config)
    if chosen == "opa-wasm":
        if url:
            raise ConfigError(f"--opa-url / ${OPA_URL_ENV} is set ({url}) but the policy engine is opa-wasm (in this "
                              "process, no server): use --policy-engine opa to judge through that server, or drop "
                              "the URL")
        from .policy_wasm import OPAWasmEngine

        return OPAWasmEngine(policies_dir, config=config)
    from .policy_opa import DEFAULT_OPA_URL, DEFAULT_TIMEOUT_S, OPAEngine, token_from_env

    return OPAEngine(url or DEFAULT_OPA_URL, policies_dir, config=config, timeout=_timeout(DEFAULT_TIMEOUT_S),
                     token=token_from_env())


def _timeout(default: float) -> float:
    raw = os.environ.get(OPA_TIMEOUT_ENV)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value <= 300:
        raise ConfigError(f"${OPA_TIMEOUT_ENV} {raw!r}: must be a number of seconds above 0, at most 300")
    return value


def engine_environment() -> dict[str, str]:
    """The command line's --policy-engine and --opa-url as environment variables, for child processes that
    must judge with the same engine (`admission serve --workers`); empty for what was not given."""
    chosen = {ENGINE_ENV: _from_context(_ENGINE_KEY), OPA_URL_ENV: _from_context(_URL_KEY)}
    return {name: value for name, value in chosen.items() if value}


def _from_context(key: str) -> str | None:
    ctx = click.get_current_context(silent=True)
    value = ctx.meta.get(key) if ctx is not None else None
    return value if isinstance(value, str) and value else None


def _remember(key: str) -> Callable[[click.Context, click.Parameter, Any], Any]:
    def callback(ctx: click.Context, _param: click.Parameter, value: Any) -> Any:
        if value:
            ctx.meta[key] = value
        return value
    return callback


def policy_engine_options(func: F) -> F:
    """`--policy-engine [rego|opa|opa-wasm]` and `--opa-url URL`, read by open_engine (the command's
    function does not receive them)."""
    func = click.option("--opa-url", metavar="URL", envvar=OPA_URL_ENV, default=None, expose_value=False,
                        callback=_remember(_URL_KEY),
                        help="The OPA server that judges with --policy-engine opa (default http://localhost:8181); "
                             "it must run the bundle of the policies (docs/policy.md).")(func)
    func = click.option("--policy-engine", type=click.Choice(ENGINES), envvar=ENGINE_ENV, default="rego",
                        show_default=True, expose_value=False, callback=_remember(_ENGINE_KEY),
                        help="Judge with regopy in this process, through an OPA server's REST API, or with the "
                             "policies compiled to Wasm by OPA (`make tools`) in this process.")(func)
    return func
