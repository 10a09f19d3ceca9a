"""triagerules: keyword rules that sort a support ticket into a category and a priority.

Pure Python, no imports beyond the standard library: vendored into the ticket-triage template, hashed
in its agent.yaml and listed in its SBOM.
"""

from __future__ import annotations

import re

__version__ = "1.0.0"

# category -> words that point to it; the first category with the most hits wins
CATEGORIES: dict[str, tuple[str, ...]] = {
    "billing": ("invoice", "refund", "charge", "charged", "payment", "billing", "price", "subscription"),
    "outage": ("down", "outage", "unavailable", "500", "503", "timeout", "cannot connect", "not loading"),
    "security": ("password", "breach", "phishing", "hacked", "2fa", "mfa", "suspicious", "leak"),
    "account": ("login", "log in", "sign in", "account", "username", "email address", "locked"),
    "feature": ("feature", "would be nice", "suggestion", "request", "roadmap", "support for"),
}
URGENT = ("urgent", "asap", "immediately", "critical", "production", "all users", "everyone", "emergency")
WORD = re.compile(r"[a-z0-9]+(?:[ -][a-z0-9]+)?")


def classify(subject: str, body: str) -> dict[str, object]:
    """The category, priority and the words that decided them."""
    text = f"{subject}\n{body}".lower()
    scores: dict[str, list[str]] = {}
    for category, words in CATEGORIES.items():
        hits = [w for w in words if _has(text, w)]
        if hits:
            scores[category] = hits
    category = max(scores, key=lambda c: len(scores[c]), default="general")
    urgent = [w for w in URGENT if _has(text, w)]
    if category in ("outage", "security") or len(urgent) >= 2:
        priority = "high"
    elif urgent or category == "billing":
        priority = "medium"
    else:
        priority = "low"
    return {"category": category, "priority": priority, "matched": scores.get(category, []), "urgent": urgent}


def _has(text: str, phrase: str) -> bool:
    return re.search(r"(?<![a-z0-9])" + re.escape(phrase) + r"(?![a-z0-9])", text) is not None
