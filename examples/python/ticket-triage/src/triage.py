"""ticket-triage: sorts a support ticket into a category and a priority, asking a model server first.

Input: a JSON object {"subject": "...", "body": "..."} (or plain text, taken as the body).
Output: JSON {"category", "priority", "source", ...}: the model's answer when it gives a usable one
("source": "model", with its "confidence"), otherwise the vendored keyword rules ("source": "rules",
with "model_error" saying why the model was not used). An error message when the input is unusable.

Built as a WebAssembly component of the agentfactory:agent@0.1.0 world: the host calls `run`, and the
agent can use only the tools agent.yaml declares: `log.write` (tools.log) and `http.fetch`
(tools.http_fetch), which reaches only the URLs of spec.http.allow. The API key is added by the node
(spec.secrets): this code never sees it.
"""

import json

import triagerules
import wit_world
from componentize_py_types import Err
from wit_world.imports import tools

MAX_INPUT = 64 * 1024
MODEL_URL = "https://models.example.com/v1/classify"
PRIORITIES = ("low", "medium", "high")
MIN_CONFIDENCE = 0.5


class WitWorld(wit_world.WitWorld):
    def run(self, input: str) -> str:
        subject, body = parse_ticket(input)
        rules = triagerules.classify(subject, body)
        try:
            model = ask_model(subject, body)
        except ValueError as exc:
            verdict = dict(rules, source="rules", model_error=str(exc))
        else:
            verdict = dict(rules, category=model["category"], priority=model["priority"],
                           confidence=model["confidence"], source="model")
        tools.log(f"triaged as {verdict['category']}/{verdict['priority']} by {verdict['source']}")
        return json.dumps(verdict, sort_keys=True)


def parse_ticket(text: str) -> tuple[str, str]:
    if len(text) > MAX_INPUT:
        raise Err(f"input: {len(text)} characters, more than {MAX_INPUT}")
    subject, body = "", text
    if text.lstrip().startswith("{"):
        try:
            ticket = json.loads(text)
        except ValueError as exc:
            raise Err(f"input: not valid JSON: {exc}") from None
        if not isinstance(ticket, dict) or not isinstance(ticket.get("body", ""), str) \
                or not isinstance(ticket.get("subject", ""), str):
            raise Err('input: expected {"subject": "...", "body": "..."} with string values')
        subject, body = ticket.get("subject", ""), ticket.get("body", "")
    if not (subject.strip() or body.strip()):
        raise Err("input: the ticket is empty")
    return subject, body


def ask_model(subject: str, body: str) -> dict:
    """The model server's verdict; ValueError saying why it cannot be used."""
    request = tools.Request(method="POST", url=MODEL_URL,
                            headers=[("Content-Type", "application/json"), ("Accept", "application/json")],
                            body=json.dumps({"subject": subject, "body": body}).encode())
    try:
        response = tools.http_fetch(request)
    except Err as exc:  # refused or failed by the host: the reason, never a secret
        raise ValueError(str(exc.value)) from None
    if response.status != 200:
        raise ValueError(f"the model server answered {response.status}")
    try:
        answer = json.loads(response.body)
    except ValueError:
        raise ValueError("the model server's answer is not JSON") from None
    if not isinstance(answer, dict):
        raise ValueError("the model server's answer is not a JSON object")
    category, priority, confidence = answer.get("category"), answer.get("priority"), answer.get("confidence")
    if category not in (*triagerules.CATEGORIES, "general") or priority not in PRIORITIES:
        raise ValueError(f"the model server answered an unknown category or priority: {category!r}/{priority!r}")
    if not isinstance(confidence, (int, float)) or not 0 <= confidence <= 1:
        raise ValueError("the model server's confidence is not a number from 0 to 1")
    if confidence < MIN_CONFIDENCE:
        raise ValueError(f"the model server is not confident ({confidence:.2f} < {MIN_CONFIDENCE})")
    return {"category": category, "priority": priority, "confidence": confidence}
