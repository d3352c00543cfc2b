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
        body = json.dumps({"service": "gateway", "part": "api", "path": self.path,
                           "forwarded_for": self.headers.get("X-Forwarded-For", "")}).encode()
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
def receiver():
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


def _start_edge(receiver, state, **env) -> tuple[str, dict]:
    """An edge in front of the receiver (every upstream), with these settings; returns its URL."""
    ports = dict.fromkeys(RoutePolicy.load().services(), receiver.server_port)
    env = {**edge_env({"PATH": "/usr/bin:/bin:/usr/sbin", **env}, ports, bind=f"127.0.0.1:{free_port()}",
                      metrics_bind=f"127.0.0.1:{free_port()}"),
           "EDGE_STATE_DIR": str(state), "EDGE_PEERS": f"local@127.0.0.1:{free_port()}", **env}
    subprocess.run([str(SCRIPT), "start", str(CONFIG_FILE)], env=env, check=True)
    url = f"http://127.0.0.1:{env['EDGE_BIND'].rsplit(':', 1)[1]}"
    try:
        wait_for(lambda: requests.get(f"{url}/healthz", timeout=1).status_code == 200, timeout=30, what="the edge up")
    except BaseException:
        subprocess.run([str(SCRIPT), "stop"], env=env, check=True)
        raise
    return url, env


@pytest.fixture(scope="module")
def rs256_edge(receiver, tmp_path_factory):
    private, public = _pem_pair()
    # The HS256 secret is set too (as a deployment moving to RS256 may still have it): it must not
    # be accepted once a public key is configured.
    url, env = _start_edge(receiver, tmp_path_factory.mktemp("edge-rs256"), CRM_JWT_SECRET=JWT_SECRET,
                           CRM_JWT_PUBLIC_KEY=public)
    yield url, private, public, env
    subprocess.run([str(SCRIPT), "stop"], env=env, check=True)


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


def test_behind_a_trusted_proxy_the_client_is_the_last_forwarded_address(receiver, tmp_path):
    """Behind an ingress controller every connection comes from the controller: with its address in
    EDGE_TRUSTED_PROXIES each client is counted by the address the controller forwarded (an IPv6
    client by its /64), not all of them as one."""
    url, env = _start_edge(receiver, tmp_path, CRM_JWT_SECRET=JWT_SECRET, EDGE_TRUSTED_PROXIES="127.0.0.1",
                           EDGE_LIMIT_PER_ADDRESS="4")
    try:
        def health(client: str) -> int:
            return requests.get(f"{url}/openapi.json", headers={"X-Forwarded-For": f"198.51.100.1, {client}"},
                                timeout=10).status_code

        assert [health("192.0.2.10") for _ in range(5)] == [200] * 4 + [429]
        assert health("192.0.2.11") == 200  # another client behind the same proxy
        # One /64: its addresses share one count.
        assert [health(f"2001:db8:5:6::{i}") for i in range(1, 6)] == [200] * 4 + [429]
        assert health("2001:db8:5:7::1") == 200
        # The service is told the client's address, last.
        Receiver.seen.clear()
        token = jwt.encode(_claims(), JWT_SECRET, algorithm="HS256")
        r = requests.get(f"{url}/api/v1/leads", headers={"X-Forwarded-For": "192.0.2.20",
                                                         "Authorization": f"Bearer {token}"}, timeout=10)
        assert r.status_code == 200 and r.json()["forwarded_for"].endswith("192.0.2.20")
    finally:
        subprocess.run([str(SCRIPT), "stop"], env=env, check=True)
    # Without the setting, the same header from the same peer is just a header: one client.
    url, env = _start_edge(receiver, tmp_path / "untrusted", CRM_JWT_SECRET=JWT_SECRET, EDGE_LIMIT_PER_ADDRESS="4")
    try:
        codes = [requests.get(f"{url}/openapi.json", headers={"X-Forwarded-For": f"192.0.2.{i}"},
                              timeout=10).status_code for i in range(5)]
        assert codes == [200] * 3 + [429] * 2  # (the readiness check before them was the fourth)
    finally:
        subprocess.run([str(SCRIPT), "stop"], env=env, check=True)


def test_the_configuration_refuses_to_start_with_an_empty_secret(rs256_edge, tmp_path):
    """Run without haproxy.sh's checks (as a container run by hand might), an empty HS256 secret
    still stops HAProxy: tokens signed with an empty key must never pass."""
    *_, env = rs256_edge
    (tmp_path / "peers.cfg").write_text("peers edge\n    peer local 127.0.0.1:1\n")
    for name in ("cors-origins.lst", "trusted-proxies.lst"):
        (tmp_path / name).write_text("")
    r = subprocess.run(["/usr/sbin/haproxy", "-c", "-L", "local", "-f", str(tmp_path / "peers.cfg"), "-f", str(CONFIG_FILE)],
                       capture_output=True, text=True,
                       env={**env, "EDGE_STATE_DIR": str(tmp_path), "EDGE_JWT_PUBLIC_KEY_FILE": "", "CRM_JWT_SECRET": ""})
    assert r.returncode != 0 and "CRM_JWT_SECRET is empty" in r.stdout + r.stderr, r.stdout + r.stderr
