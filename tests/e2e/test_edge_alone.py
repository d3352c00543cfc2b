"""The edge alone, without a stack: a real haproxy started by infra/haproxy/haproxy.sh from the
committed configuration, in front of a real HTTP receiver standing in for every upstream (so what
reaches a service is seen exactly). It verifies RS256 tokens (a deployment whose gateway signs with
CRM_JWT_PRIVATE_KEY), and exports every metric the alerts and the dashboard use."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.edge import CONFIG_FILE
from gateway.policy import RoutePolicy
from infra.stack import REPO, edge_env
from tests.e2e.gateway_stack import free_port
from tests.infra import JWT_SECRET, wait_for

SCRIPT = REPO / "infra" / "haproxy" / "haproxy.sh"


class Receiver(BaseHTTPRequestHandler):
    """Every upstream: answers 200 and remembers what reached it."""

    seen: list[tuple[str, str]] = []

    def _answer(self):
        if self.path != "/healthz":
            Receiver.seen.append((self.command, self.path))
        body = json.dumps({"service": "gateway", "part": "api", "path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self._answer()

    def do_POST(self):
        self._answer()

    def log_message(self, *args):  # quiet
        pass


def _pem_pair():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public


@pytest.fixture(scope="module")
def rs256_edge(tmp_path_factory):
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    private, public = _pem_pair()
    state = tmp_path_factory.mktemp("edge-rs256")
    ports = dict.fromkeys(RoutePolicy.load().services(), server.server_port)
    # The HS256 secret is set too (as a deployment moving to RS256 may still have it): it must not
    # be accepted once a public key is configured.
    env = {**edge_env({"CRM_JWT_SECRET": JWT_SECRET, "CRM_JWT_PUBLIC_KEY": public, "PATH": "/usr/bin:/bin:/usr/sbin"},
                      ports, bind=f"127.0.0.1:{free_port()}", metrics_bind=f"127.0.0.1:{free_port()}"),
           "EDGE_STATE_DIR": str(state), "EDGE_PEERS": f"local@127.0.0.1:{free_port()}"}
    subprocess.run([str(SCRIPT), "start", str(CONFIG_FILE)], env=env, check=True)
    url = f"http://127.0.0.1:{env['EDGE_BIND'].rsplit(':', 1)[1]}"
    try:
        wait_for(lambda: requests.get(f"{url}/healthz", timeout=1).status_code == 200, timeout=30,
                 what="the RS256 edge up")
        yield url, private, public, env
    finally:
        subprocess.run([str(SCRIPT), "stop"], env=env, check=True)
        server.shutdown()


def _claims(**changes) -> dict:
    now = int(time.time())
    return {"sub": "u-1", "role": "rep", "name": "Rep", "teams": ["t"], "manages": [], "iss": "sfa-crm",
            "aud": "sfa-crm-api", "iat": now, "exp": now + 600, "ver": 1, **changes}


def _get(url: str, token: str, path: str = "/api/v1/leads") -> requests.Response:
    Receiver.seen.clear()
    return requests.get(f"{url}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=10)


def _hs256(secret: str, claims: dict) -> str:
    """Signed by hand: PyJWT refuses to use a PEM key as an HMAC secret, which is the attack."""
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
    signing = f"{b64(json.dumps({'alg': 'HS256', 'typ': 'JWT'}).encode())}.{b64(json.dumps(claims).encode())}"
    return f"{signing}.{b64(hmac.new(secret.encode(), signing.encode(), hashlib.sha256).digest())}"


def test_an_rs256_token_signed_with_the_private_key_passes(rs256_edge):
    url, private, _, _ = rs256_edge
    r = _get(url, jwt.encode(_claims(), private, algorithm="RS256", headers={"kid": "k1"}))
    assert r.status_code == 200, r.text
    assert Receiver.seen == [("GET", "/api/v1/leads")]
    # The route policy holds as with HS256: a rep may not manage users.
    r = _get(url, jwt.encode(_claims(), private, algorithm="RS256"), "/api/v1/users")
    assert r.status_code == 403 and Receiver.seen == []


@pytest.mark.parametrize("attack", ["hs256 with the old secret", "key confusion", "none", "expired",
                                    "wrong issuer", "another key", "tampered"])
def test_with_a_public_key_only_rs256_tokens_of_that_key_pass(rs256_edge, attack):
    url, private, public, _ = rs256_edge
    token = {
        "hs256 with the old secret": lambda: jwt.encode(_claims(), JWT_SECRET, algorithm="HS256"),
        # The public key is public: a token HMAC-signed with it must not pass as ours.
        "key confusion": lambda: _hs256(public, _claims()),
        "none": lambda: jwt.encode(_claims(), None, algorithm="none"),
        "expired": lambda: jwt.encode(_claims(exp=int(time.time()) - 60), private, algorithm="RS256"),
        "wrong issuer": lambda: jwt.encode(_claims(iss="someone-else"), private, algorithm="RS256"),
        "another key": lambda: jwt.encode(_claims(), _pem_pair()[0], algorithm="RS256"),
        "tampered": lambda: _tamper(jwt.encode(_claims(), private, algorithm="RS256")),
    }[attack]()
    r = _get(url, token)
    assert r.status_code == 401, (attack, r.status_code, r.text)
    assert r.headers["Content-Type"].startswith("application/problem+json")
    assert Receiver.seen == []  # nothing reached a service


def _tamper(token: str) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["role"] = "admin"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


def test_the_script_refuses_a_key_file_that_is_not_a_public_key(rs256_edge, tmp_path):
    *_, env = rs256_edge
    bad = tmp_path / "key.pem"
    bad.write_text("not a key\n")
    for broken in ({"EDGE_JWT_PUBLIC_KEY_FILE": str(bad)}, {"EDGE_JWT_PUBLIC_KEY_FILE": str(tmp_path / "missing.pem")}):
        r = subprocess.run([str(SCRIPT), "check", str(CONFIG_FILE)], capture_output=True, text=True,
                           env={**env, "EDGE_STATE_DIR": str(tmp_path / "state"), **broken})
        assert r.returncode != 0 and "not a readable PEM public key" in r.stderr, r.stderr
    # Without any key, a short HS256 secret is refused too.
    r = subprocess.run([str(SCRIPT), "check", str(CONFIG_FILE)], capture_output=True, text=True,
                       env={**env, "EDGE_STATE_DIR": str(tmp_path / "state"), "CRM_JWT_PUBLIC_KEY": "",
                            "EDGE_JWT_PUBLIC_KEY_FILE": "", "CRM_JWT_SECRET": "short"})
    assert r.returncode != 0 and "32 characters" in r.stderr, r.stderr


def test_every_edge_metric_the_alerts_and_dashboard_use_is_exported(rs256_edge):
    from tests.integration.test_deployment import edge_metrics_used

    url, private, _, env = rs256_edge
    _get(url, jwt.encode(_claims(), private, algorithm="RS256"))
    text = requests.get(f"http://{env['EDGE_METRICS_BIND']}/metrics", timeout=10).text
    exported = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
    used = edge_metrics_used()
    assert len(used) >= 5 and used - exported == set(), sorted(used - exported)
    # The labels the expressions select on are there too.
    assert 'haproxy_frontend_http_responses_total{proxy="public",code="2xx"}' in text
    assert 'haproxy_backend_http_responses_total{proxy="be_leads",code="5xx"}' in text
