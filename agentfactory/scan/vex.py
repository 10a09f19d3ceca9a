"""VEX: statements that a vulnerability does not affect a product, applied to findings.

OpenVEX (v0.2.0) and CycloneDX VEX are read into one `VexStatement` model. A statement only
suppresses a finding when it names the finding's advisory (id or alias), is about *this* agent
(its purl, compared without qualifiers) and says not_affected (with a reason) or fixed. A
suppressed finding stays in the list, carrying the statement, so the decision remains visible
and auditable; statements that match nothing are reported, because a VEX document written for
another product (or another version of this one) silently doing nothing is a common mistake.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from packageurl import PackageURL

from ..errors import InputError
from ..jsonsafe import load_json_object
from .common import field_list, field_obj, field_str, item_obj, normalize_purl
from .model import Finding, Suppression

MAX_VEX_BYTES = 16 * 1024 * 1024

STATUSES = ("not_affected", "affected", "fixed", "under_investigation")
SUPPRESSING = ("not_affected", "fixed")
OPENVEX_JUSTIFICATIONS = (
    "component_not_present", "vulnerable_code_not_present", "vulnerable_code_not_in_execute_path",
    "vulnerable_code_cannot_be_controlled_by_adversary", "inline_mitigations_already_exist",
)
CYCLONEDX_JUSTIFICATIONS = (
    "code_not_present", "code_not_reachable", "requires_configuration", "requires_dependency",
    "requires_environment", "protected_by_compiler", "protected_at_runtime", "protected_at_perimeter",
    "protected_by_mitigating_control",
)
# CycloneDX analysis.state → the OpenVEX status it means. false_positive: the scanner was wrong, so
# the product is not affected; its justification is recorded as "false_positive" when none is given.
_CDX_STATE = {"not_affected": "not_affected", "false_positive": "not_affected", "resolved": "fixed",
              "resolved_with_pedigree": "fixed", "exploitable": "affected", "in_triage": "under_investigation"}


@dataclass(frozen=True)
class VexStatement:
    vulnerability: str
    status: str  # one of STATUSES
    products: tuple[str, ...]  # normalized purls (or other ids verbatim) the statement is about
    subcomponents: tuple[str, ...] = ()  # normalized purls; empty: the statement covers the whole product
    aliases: tuple[str, ...] = ()
    justification: str = ""
    impact_statement: str = ""
    action_statement: str = ""
    timestamp: datetime | None = None
    author: str = ""
    where: str = ""  # document id or file, and the statement's index

    @property
    def names(self) -> tuple[str, ...]:
        return (self.vulnerability, *self.aliases)

    @property
    def suppresses(self) -> bool:
        return self.status in SUPPRESSING

    def suppression(self) -> Suppression:
        reason = (self.justification or self.impact_statement) if self.status == "not_affected" else ""
        return Suppression(status=self.status, justification=reason, statement=self.where, author=self.author)


# -- parsing ---------------------------------------------------------------------------------------

def _timestamp(value: Any, where: str) -> datetime | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > 64:
        raise InputError(where, "timestamp must be an RFC 3339 string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InputError(where, f"timestamp {value!r} is not RFC 3339") from None
    if parsed.tzinfo is None:
        raise InputError(where, f"timestamp {value!r} has no time zone; order between statements would be a guess")
    return parsed


def _product_id(value: str) -> str:
    """A purl normalized for comparison; any other identifier (an image reference, a URL) verbatim."""
    if value.startswith("pkg:"):
        return normalize_purl(value, value)
    return value


def _versionless(product: str) -> str:
    if not product.startswith("pkg:"):
        return product
    parsed = PackageURL.from_string(product)
    return str(PackageURL(type=parsed.type, namespace=parsed.namespace, name=parsed.name).to_string())


def _strings(doc: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
    items = field_list(doc, key, where, required=False)
    if not all(isinstance(v, str) and v for v in items):
        raise InputError(where, f"{key} must be a list of non-empty strings")
    return tuple(items)


def _openvex_component(item: dict[str, Any], where: str) -> list[str]:
    """The ids one OpenVEX component (product or subcomponent) goes by: its @id and identifiers.purl."""
    ids: list[str] = []
    if "@id" in item:
        ids.append(_product_id(field_str(item, "@id", where)))
    identifiers = field_obj(item, "identifiers", where, required=False)
    if "purl" in identifiers:
        ids.append(_product_id(field_str(identifiers, "purl", f"{where}.identifiers")))
    if not ids:
        raise InputError(where, "needs an @id or identifiers.purl")
    return ids


def _check_not_affected(status: str, justification: str, impact: str, where: str) -> None:
    if status == "not_affected" and not (justification or impact):
        raise InputError(where, "status not_affected needs a justification or an impact statement; "
                                "without one the claim cannot be reviewed")


def parse_openvex(doc: dict[str, Any], where: str) -> list[VexStatement]:
    context = doc.get("@context")
    if not isinstance(context, str) or not context.startswith("https://openvex.dev/ns"):
        raise InputError(where, "@context must be an https://openvex.dev/ns/… URL: this is not an OpenVEX document")
    name = field_str(doc, "@id", where, required=False) or where
    author = field_str(doc, "author", where)
    doc_time = _timestamp(doc.get("timestamp"), f"{where}: timestamp")
    statements: list[VexStatement] = []
    items = field_list(doc, "statements", where)
    for i in range(len(items)):
        at = f"{where}: statements[{i}]"
        st = item_obj(items, i, at)
        vuln = field_obj(st, "vulnerability", at)
        vid = field_str(vuln, "name", f"{at}.vulnerability", required=False) or field_str(
            vuln, "@id", f"{at}.vulnerability")
        status = field_str(st, "status", at)
        if status not in STATUSES:
            raise InputError(at, f"status {status!r} is not one of {', '.join(STATUSES)}")
        justification = field_str(st, "justification", at, required=False)
        if justification and justification not in OPENVEX_JUSTIFICATIONS:
            raise InputError(at, f"justification {justification!r} is not one of {', '.join(OPENVEX_JUSTIFICATIONS)}")
        impact = field_str(st, "impact_statement", at, required=False)
        _check_not_affected(status, justification, impact, at)
        products: list[str] = []
        subcomponents: list[str] = []
        prods = field_list(st, "products", at)
        if not prods:
            raise InputError(at, "products must name at least one product")
        for k in range(len(prods)):
            here = f"{at}.products[{k}]"
            product = item_obj(prods, k, here)
            products.extend(_openvex_component(product, here))
            subs = field_list(product, "subcomponents", here, required=False)
            for m in range(len(subs)):
                subcomponents.extend(_openvex_component(item_obj(subs, m, f"{here}.subcomponents[{m}]"),
                                                        f"{here}.subcomponents[{m}]"))
        statements.append(VexStatement(
            vulnerability=vid, status=status, products=tuple(dict.fromkeys(products)),
            subcomponents=tuple(dict.fromkeys(subcomponents)),
            aliases=_strings(vuln, "aliases", f"{at}.vulnerability"), justification=justification,
            impact_statement=impact, action_statement=field_str(st, "action_statement", at, required=False),
            timestamp=_timestamp(st.get("timestamp"), f"{at}.timestamp") or doc_time,
            author=field_str(st, "supplier", at, required=False) or author, where=f"{name}#statements[{i}]",
        ))
    return statements


def _cdx_ref(ref: str, components: dict[str, str]) -> str:
    """A CycloneDX affects ref as a product id: a local bom-ref's purl, a BOM-link's fragment, or a purl."""
    if ref in components:
        return components[ref]
    if ref.startswith("urn:cdx:") and "#" in ref:
        ref = unquote(ref.split("#", 1)[1])
        ref = components.get(ref, ref)
    return _product_id(ref)


def parse_cyclonedx_vex(doc: dict[str, Any], where: str) -> list[VexStatement]:
    """Statements from CycloneDX `vulnerabilities[].analysis`; entries without analysis are not VEX and are skipped.

    With a `metadata.component` purl that component is the product and the affected refs are its
    subcomponents; without one, the affected refs are the products themselves.
    """
    if doc.get("bomFormat") != "CycloneDX":
        raise InputError(where, "bomFormat must be \"CycloneDX\"")
    name = field_str(doc, "serialNumber", where, required=False) or where
    metadata = field_obj(doc, "metadata", where, required=False)
    doc_time = _timestamp(metadata.get("timestamp"), f"{where}: metadata.timestamp")
    product = field_obj(metadata, "component", f"{where}: metadata", required=False)
    product_purl = field_str(product, "purl", f"{where}: metadata.component", required=False)
    comps: dict[str, str] = {}
    listed = field_list(doc, "components", where, required=False)
    for i in range(len(listed)):
        at = f"{where}: components[{i}]"
        comp = item_obj(listed, i, at)
        ref, purl = field_str(comp, "bom-ref", at, required=False), field_str(comp, "purl", at, required=False)
        if ref and purl:
            comps[ref] = normalize_purl(purl, f"{at}.purl")
    statements: list[VexStatement] = []
    vulns = field_list(doc, "vulnerabilities", where, required=False)
    for i in range(len(vulns)):
        at = f"{where}: vulnerabilities[{i}]"
        vuln = item_obj(vulns, i, at)
        if "analysis" not in vuln:
            continue
        analysis = field_obj(vuln, "analysis", at)
        state = field_str(analysis, "state", f"{at}.analysis")
        if state not in _CDX_STATE:
            raise InputError(f"{at}.analysis", f"state {state!r} is not one of {', '.join(_CDX_STATE)}")
        status = _CDX_STATE[state]
        justification = field_str(analysis, "justification", f"{at}.analysis", required=False)
        if justification and justification not in CYCLONEDX_JUSTIFICATIONS:
            raise InputError(f"{at}.analysis", f"justification {justification!r} is not one of "
                                               f"{', '.join(CYCLONEDX_JUSTIFICATIONS)}")
        if state == "false_positive":
            justification = justification or "false_positive"
        detail = field_str(analysis, "detail", f"{at}.analysis", required=False)
        _check_not_affected(status, justification, detail, at)
        affects = field_list(vuln, "affects", at)
        refs = [_cdx_ref(field_str(item_obj(affects, k, f"{at}.affects[{k}]"), "ref", f"{at}.affects[{k}]"), comps)
                for k in range(len(affects))]
        if not refs:
            raise InputError(at, "affects must name at least one component")
        refs_list = field_list(vuln, "references", at, required=False)
        aliases = tuple(field_str(item_obj(refs_list, k, f"{at}.references[{k}]"), "id", f"{at}.references[{k}]")
                        for k in range(len(refs_list)))
        when = (_timestamp(analysis.get("lastUpdated"), f"{at}.analysis.lastUpdated")
                or _timestamp(analysis.get("firstIssued"), f"{at}.analysis.firstIssued")
                or _timestamp(vuln.get("updated"), f"{at}.updated") or doc_time)
        statements.append(VexStatement(
            vulnerability=field_str(vuln, "id", at), status=status,
            products=(_product_id(product_purl),) if product_purl else tuple(dict.fromkeys(refs)),
            subcomponents=tuple(dict.fromkeys(refs)) if product_purl else (),
            aliases=aliases, justification=justification, impact_statement=detail, timestamp=when,
            where=f"{name}#vulnerabilities[{i}]",
        ))
    return statements


def parse_vex(data: bytes, where: str | Path) -> list[VexStatement]:
    """Statements from an OpenVEX or CycloneDX VEX document, told apart by `@context` / `bomFormat`."""
    where = str(where)
    doc = load_json_object(data, where, max_bytes=MAX_VEX_BYTES, what="the VEX document")
    if "@context" in doc:
        return parse_openvex(doc, where)
    if "bomFormat" in doc:
        return parse_cyclonedx_vex(doc, where)
    raise InputError(where, "neither an OpenVEX document (@context) nor CycloneDX VEX (bomFormat)")


# -- applying --------------------------------------------------------------------------------------

def _applies(statement: VexStatement, finding: Finding, product: str) -> bool:
    """Names the finding's advisory and is about this product (and, if it lists any, this component).

    A product purl without a version in the statement covers every version of the product (an
    agent's version is its digest, unknown when the statement is written); with one, only that one.
    """
    if not set(statement.names) & set(finding.names):
        return False
    if product not in statement.products and _versionless(product) not in statement.products:
        return False
    return not statement.subcomponents or finding.package in statement.subcomponents


def _order(statement: VexStatement) -> float:
    return statement.timestamp.timestamp() if statement.timestamp else float("-inf")


def apply_vex(findings: Iterable[Finding], statements: Sequence[VexStatement], product_purl: str) -> list[Finding]:
    """The findings, each suppressed when the latest statement that applies to it says not_affected or fixed.

    "Latest" is by timestamp (input order breaks ties), so a later `affected` revokes an earlier
    `not_affected` for the same vulnerability and product.
    """
    product = _product_id(product_purl)
    result: list[Finding] = []
    for finding in findings:
        applicable = [s for s in statements if _applies(s, finding, product)]
        if applicable:
            latest = max(enumerate(applicable), key=lambda pair: (_order(pair[1]), pair[0]))[1]
            if latest.suppresses:
                finding = finding.suppress(latest.suppression())
        result.append(finding)
    return result


def unused_statements(findings: Sequence[Finding], statements: Sequence[VexStatement],
                      product_purl: str) -> list[VexStatement]:
    """Statements that apply to none of the findings: written for another product, or for a vulnerability not found."""
    product = _product_id(product_purl)
    return [s for s in statements if not any(_applies(s, f, product) for f in findings)]
