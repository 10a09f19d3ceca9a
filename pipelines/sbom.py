"""The CycloneDX 1.6 SBOM of a built agent, made from the template's declared dependencies.

Syft and friends cannot read dependency data out of a wasm binary, so the SBOM is built from what
the template declares and the pipeline has verified: the vendored dependencies (purl, licence,
source hash), the toolchain that compiled them and the artifact's digest. It is evidence that is
signed, logged and reviewed in Git, so the same artifact at the same commit must give the same
bytes: cyclonedx-python-lib would otherwise stamp the current time, a random serial number and
random bom-refs, and every one of those is set explicitly here.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cyclonedx.model import HashAlgorithm, HashType, Property
from cyclonedx.model.bom import Bom, BomMetaData
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.model.contact import OrganizationalContact
from cyclonedx.model.dependency import Dependency as CdxDependency
from cyclonedx.model.license import License
from cyclonedx.model.tool import ToolRepository
from cyclonedx.output.json import JsonV1Dot6
from packageurl import PackageURL

from agentfactory import __version__
from agentfactory.digest import parse_digest
from agentfactory.errors import InputError
from agentfactory.sbom import (  # re-exported: reading SBOMs is the trust core's job
    MAX_ARRAY_ITEMS,
    MAX_SBOM_BYTES,
    SPEC_VERSION,
    load_sbom,
    release_path,
    sbom_subject,
    validate_sbom,
)
from agentfactory.template import MANIFEST, Dependency, Template

try:  # 11.x home of the factory; the old path still works but warns that it is deprecated
    from cyclonedx.contrib.license.factories import LicenseFactory
except ImportError:  # pragma: no cover - cyclonedx-python-lib < 11
    from cyclonedx.factory.license import LicenseFactory

PROP_SOURCE_HASH = "agentfactory:source-hash"
SOURCE_HASH_METHOD = "tree-sha256-v1"  # docs/templates.md: sha256 of the sorted `sha256sum` manifest
# Serial numbers are uuid5 names in a namespace of our own, so no other tool's uuid5 can collide.
SERIAL_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://agentfactory.dev/cyclonedx/serial-number")


def agent_purl(name: str, digest: str, version: str) -> PackageURL:
    """The agent as an OCI artifact pinned by digest, the human tag as a qualifier.

    packageurl writes the digest's ':' unencoded (`sha256:<hex>`), as the current purl spec
    requires; the older oci examples show `sha256%3A`. Both parse to the same purl: compare
    parsed purls, never strings.
    """
    return PackageURL(type="oci", name=name, version=digest, qualifiers={"tag": version})


def serial_number(digest: str, commit: str | None) -> uuid.UUID:
    """Same artifact at the same commit → same serial, so a rebuild reproduces the document."""
    return uuid.uuid5(SERIAL_NAMESPACE, f"{digest}@{commit or ''}")


def build_sbom(template: Template, *, digest: str, toolchain: dict[str, Any], epoch: int,
               commit: str | None) -> bytes:
    """The CycloneDX 1.6 JSON SBOM of the agent built from `template`, whose wasm is `digest`.

    `toolchain` is `pipelines.toolchain.identity(language)`; `epoch` the build's
    SOURCE_DATE_EPOCH, which becomes the timestamp. Identical inputs give identical bytes.
    """
    where = f"{template.folder.name}/{MANIFEST}"
    parse_digest(digest, "build_sbom digest")
    purl = agent_purl(template.name, digest, template.version)
    root_properties = [Property(name="agentfactory:language", value=template.language)]
    if commit:
        root_properties.append(Property(name="agentfactory:commit", value=commit))
    root = Component(
        type=ComponentType.APPLICATION, name=template.name, version=template.version,
        bom_ref=purl.to_string(), purl=purl, description=template.description,
        # No mime_type: 11.12 writes it as "mimeType", which the 1.6 schema (it says "mime-type")
        # refuses; the strict validator catches that.
        hashes=[HashType(alg=HashAlgorithm.SHA_256, content=digest.split(":", 1)[1])],
        authors=[_contact(owner) for owner in template.owners],
        properties=root_properties,
    )
    components = _dependency_components(template.dependencies, taken={purl.to_string()}, where=where)
    bom = Bom(
        serial_number=serial_number(digest, commit),
        version=1,
        metadata=BomMetaData(
            timestamp=datetime.fromtimestamp(epoch, UTC),
            component=root,
            tools=ToolRepository(components=_tools(template.language, toolchain)),
        ),
        components=components,
    )
    # The agent depends on every vendored dependency; each of those on nothing we know of.
    bom.dependencies = [
        CdxDependency(ref=root.bom_ref, dependencies=[CdxDependency(ref=c.bom_ref) for c in components]),
        *(CdxDependency(ref=c.bom_ref) for c in components),
    ]
    text = JsonV1Dot6(bom).output_as_string(indent=2)
    return (text + "\n").encode("utf-8")


def _contact(owner: str) -> OrganizationalContact:
    """Owners are GitHub handles or e-mail addresses (the template schema allows only those)."""
    if "@" in owner and not owner.startswith("@"):
        return OrganizationalContact(email=owner)
    return OrganizationalContact(name=owner)


def _dependency_components(deps: Iterable[Dependency], *, taken: set[str], where: str) -> list[Component]:
    """One library component per vendored dependency, its bom-ref fixed.

    The bom-ref is the purl; two dependencies declaring the same purl would make the library
    replace one with a random ref, so the second gets a ref derived from its (unique) name.
    """
    factory = LicenseFactory()
    out: list[Component] = []
    for dep in deps:
        try:
            purl = PackageURL.from_string(dep.purl)
        except ValueError as exc:
            raise InputError(where, f"dependency {dep.name!r}: purl {dep.purl!r} is malformed ({exc})") from None
        ref = purl.to_string()
        if ref in taken:
            ref = f"agentfactory:dependency/{dep.name}"
        taken.add(ref)
        licence: License = factory.make_from_string(dep.license)
        out.append(Component(
            type=ComponentType.LIBRARY, name=dep.name, version=dep.version, bom_ref=ref, purl=purl,
            licenses=[licence],
            hashes=[HashType(alg=HashAlgorithm.SHA_256, content=dep.sha256)],
            properties=[Property(name=PROP_SOURCE_HASH, value=SOURCE_HASH_METHOD),
                        Property(name="agentfactory:vendored-path", value=dep.path)],
        ))
    return out


def _libc_supplement(raw: Any) -> list[tuple[str, str]]:
    """The toolchain record's {"pipelines/libc/<file>": sha256}, sorted; InputError for anything else (the record
    can come back from the build cache, and an SBOM must not name a file or hash it was not given)."""
    if raw is None:
        return []
    if not isinstance(raw, dict) or not all(
            isinstance(k, str) and re.fullmatch(r"pipelines/libc/[A-Za-z0-9_.-]{1,64}", k) and isinstance(v, str)
            and re.fullmatch(r"[0-9a-f]{64}", v) for k, v in raw.items()):
        raise InputError("toolchain.libcSupplement", "must map pipelines/libc/<file> to a lowercase hex SHA-256")
    return sorted(raw.items())


def _tools(language: str, toolchain: dict[str, Any]) -> list[Component]:
    """metadata.tools as components (the CycloneDX 1.5+ form): compiler, libc, and the builder."""
    version = str(toolchain.get("version", ""))
    builder = Component(type=ComponentType.APPLICATION, name="agentfactory", version=__version__,
                        description="Agent Factory pipeline: built the module and wrote this SBOM")
    tools = [builder]
    name = toolchain.get("name")
    if name == "zig cc":
        props = [Property(name="agentfactory:target", value=str(toolchain.get("target", "")))]
        if toolchain.get("flags"):
            props.append(Property(name="agentfactory:flags", value=" ".join(map(str, toolchain["flags"]))))
        tools.append(Component(type=ComponentType.APPLICATION, name="zig", version=version,
                               purl=PackageURL(type="pypi", name="ziglang", version=version),
                               description="zig cc, from the pinned ziglang wheel", properties=props))
        if language == "c":
            tools.append(Component(type=ComponentType.LIBRARY, name="wasi-libc", version=version,
                                   description=f"wasi-libc as bundled with zig {version}; linked into the module"))
            for path, sha in _libc_supplement(toolchain.get("libcSupplement")):
                tools.append(Component(
                    type=ComponentType.LIBRARY, name=f"agentfactory-libc/{Path(path).name}", version=__version__,
                    hashes=[HashType(alg=HashAlgorithm.SHA_256, content=str(sha))],
                    description=f"the pipeline's own {path}, linked into the module ahead of zig's libc",
                    properties=[Property(name="agentfactory:path", value=str(path))]))
    elif name == "wat2wasm":
        tools.append(Component(type=ComponentType.APPLICATION, name="wat2wasm", version=version,
                               purl=PackageURL(type="pypi", name="wasmtime", version=version),
                               description="wat2wasm from wasmtime-py"))
    elif name == "componentize-py":
        tools.append(Component(type=ComponentType.APPLICATION, name="componentize-py", version=version,
                               purl=PackageURL(type="pypi", name="componentize-py", version=version),
                               description="componentize-py, from the pinned wheel: built the component",
                               properties=[Property(name="agentfactory:world", value=str(toolchain.get("world", "")))]))
        cpython = str(toolchain.get("cpython", "unknown"))
        tools.append(Component(type=ComponentType.LIBRARY, name="cpython", version=cpython,
                               description=f"CPython {cpython} (interpreter and standard library) as bundled with "
                                           f"componentize-py {version}; linked into the component"))
        tools.append(Component(type=ComponentType.LIBRARY, name="wasi-libc", version=f"componentize-py-{version}",
                               description=f"wasi-libc as bundled with componentize-py {version}; linked into the "
                                           "component"))
    elif name:
        tools.append(Component(type=ComponentType.APPLICATION, name=str(name), version=version))
    return tools




__all__ = ["MAX_ARRAY_ITEMS", "MAX_SBOM_BYTES", "SPEC_VERSION", "agent_purl", "build_sbom", "load_sbom",
           "release_path", "sbom_subject", "serial_number", "validate_sbom"]
