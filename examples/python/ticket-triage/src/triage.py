"""ticket-triage: sorts a support ticket into a category and a priority.

Input: a JSON object {"subject": "...", "body": "..."} (or plain text, taken as the body).
Output: JSON {"category", "priority", "matched", "urgent"}; an error message when the input is unusable.
Built as a WebAssembly component of the agentfactory:agent@0.1.0 world: the host calls `run`, and the
agent can use only the tools agent.yaml declares (here `log.write`, the WIT function `tools.log`).
"""

import json

import triagerules
import wit_world
from componentize_py_types import Err
from wit_world.imports import tools

MAX_INPUT = 64 * 1024


class WitWorld(wit_world.WitWorld):
    def run(self, input: str) -> str:
        if len(input) > MAX_INPUT:
            raise Err(f"input: {len(input)} characters, more than {MAX_INPUT}")
        subject, body = "", input
        if input.lstrip().startswith("{"):
            try:
                ticket = json.loads(input)
            except ValueError as exc:
                raise Err(f"input: not valid JSON: {exc}") from None
            if not isinstance(ticket, dict) or not isinstance(ticket.get("body", ""), str) \
                    or not isinstance(ticket.get("subject", ""), str):
                raise Err('input: expected {"subject": "...", "body": "..."} with string values')
            subject, body = ticket.get("subject", ""), ticket.get("body", "")
        if not (subject.strip() or body.strip()):
            raise Err("input: the ticket is empty")
        verdict = triagerules.classify(subject, body)
        tools.log(f"triaged as {verdict['category']}/{verdict['priority']}")
        return json.dumps(verdict, sort_keys=True)
