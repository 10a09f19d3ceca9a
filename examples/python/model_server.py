"""A stand-in for a model-serving endpoint, served on loopback for the demo and the tests.

What ticket-triage (examples/python/ticket-triage) calls: `POST /v1/classify` with
`{"subject": "...", "body": "..."}` and `Authorization: Bearer <API key>` answers
`{"category": ..., "priority": ..., "confidence": ...}` from a small bag-of-words "model"; a missing or
wrong key is `401`. It serves HTTPS for `models.example.com` with a certificate from its own CA (written
to `--state DIR/ca.pem`), so the node verifies TLS exactly as for a real endpoint; the node is pointed at
it with `--http-connect-to models.example.com:443=127.0.0.1:PORT` and trusts it with `--http-ca-file`.

    python model_server.py --state DIR [--listen 127.0.0.1:0]   # API key: $TRIAGE_MODEL_API_KEY

prints one JSON line (`{"port": ..., "ca_file": ...}`) when it is ready and serves until stopped. It keeps
no copy of the key it receives beyond the comparison, and logs each request's method, path, status and
whether the key matched.
"""

from __future__ import annotations

import argparse
import datetime
import hmac
import json
import os
import ssl
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HOST_NAME = "models.example.com"
MAX_BODY = 64 * 1024
# word -> (category, weight): the "model"
WEIGHTS = {
    "refund": ("billing", 3), "invoice": ("billing", 3), "charged": ("billing", 2), "card": ("billing", 1),
    "down": ("outage", 3), "503": ("outage", 3), "500": ("outage", 3), "loading": ("outage", 2),
    "hacked": ("security", 3), "phishing": ("security", 3), "password": ("security", 2),
    "login": ("account", 2), "locked": ("account", 3), "feature": ("feature", 3), "dark": ("feature", 1),
}
PRIORITY = {"outage": "high", "security": "high", "billing": "medium", "account": "medium", "feature": "low",
            "general": "low"}


def classify(subject: str, body: str) -> dict[str, object]:
    """The model's answer: the best-scoring category, its priority and a confidence from 0 to 1."""
    scores: dict[str, int] = {}
    for word in f"{subject} {body}".lower().replace(",", " ").replace(".", " ").split():
        if word in WEIGHTS:
            category, weight = WEIGHTS[word]
            scores[category] = scores.get(category, 0) + weight
    if not scores:
        return {"category": "general", "priority": "low", "confidence": 0.55}
    category = max(sorted(scores), key=lambda c: scores[c])
    confidence = round(min(0.99, 0.5 + scores[category] / (2 * (sum(scores.values()) + 2))), 2)
    return {"category": category, "priority": PRIORITY[category], "confidence": confidence}


@dataclass
class ModelServer:
    port: int
    ca_file: Path
    log: list[dict[str, object]] = field(default_factory=list)  # method, path, status, key_matched


def make_certificates(state: Path) -> tuple[Path, Path]:
    """A fresh CA (state/ca.pem) and a certificate for HOST_NAME signed by it: (certificate chain, key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    state.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ticket-triage demo model server CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST_NAME)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(HOST_NAME)]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    (state / "ca.pem").write_bytes(ca.public_bytes(pem))
    (state / "server.pem").write_bytes(leaf.public_bytes(pem))
    (state / "server.key").write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    return state / "server.pem", state / "server.key"


@contextmanager
def serving(state: Path, api_key: str, listen: tuple[str, int] = ("127.0.0.1", 0)) -> Iterator[ModelServer]:
    """The model server on `listen` until the block ends."""
    if not api_key:
        raise ValueError("the model server needs an API key to expect")
    cert, key = make_certificates(state)
    server_info = ModelServer(port=0, ca_file=state / "ca.pem")
    expected = f"Bearer {api_key}".encode()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            matched = hmac.compare_digest(self.headers.get("Authorization", "").encode(), expected)
            length = int(self.headers.get("Content-Length") or 0)
            if self.path != "/v1/classify":
                answer: dict[str, object]
                status, answer = 404, {"error": f"no such endpoint {self.path}"}
            elif not matched:
                status, answer = 401, {"error": "invalid API key"}
            elif length > MAX_BODY:
                status, answer = 413, {"error": "request too large"}
            else:
                try:
                    ticket = json.loads(self.rfile.read(length))
                    status, answer = 200, classify(str(ticket.get("subject", "")), str(ticket.get("body", "")))
                except (ValueError, AttributeError):
                    status, answer = 400, {"error": "expected a JSON object with subject and body"}
            body = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            record = {"method": "POST", "path": self.path, "status": status, "key_matched": matched}
            server_info.log.append(record)
            print(json.dumps(record), file=sys.stderr, flush=True)

    httpd = ThreadingHTTPServer(listen, Handler)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
    server_info.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server_info
    finally:
        httpd.shutdown()
        httpd.server_close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state", type=Path, required=True, help="folder for the CA and the server certificate")
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (default 127.0.0.1:0, any free port)")
    args = parser.parse_args()
    api_key = os.environ.get("TRIAGE_MODEL_API_KEY", "")
    if not api_key:
        print("model_server: set TRIAGE_MODEL_API_KEY to the API key it expects", file=sys.stderr)
        return 2
    host, _, port = args.listen.rpartition(":")
    with serving(args.state, api_key, (host, int(port))) as server:
        print(json.dumps({"port": server.port, "ca_file": str(server.ca_file), "host": HOST_NAME}), flush=True)
        threading.Event().wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
