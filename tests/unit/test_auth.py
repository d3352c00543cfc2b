"""Token verification refuses every forged, stale or misdirected token."""
from __future__ import annotations

import base64
import datetime as dt
import json

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from crmkit.auth import TokenVerifier, Unauthorized, issue_token
from crmkit.settings import load_settings

SECRET = "unit-test-secret-unit-test-secret-0123456789"


@pytest.fixture
def verifier(monkeypatch):
    monkeypatch.setenv("CRM_JWT_SECRET", SECRET)
    return TokenVerifier(load_settings("leads"))


def _claims(**over):
    now = dt.datetime.now(dt.UTC)
    claims = {"sub": "u1", "role": "rep", "teams": ["t1"], "manages": [], "iss": "sfa-crm", "aud": "sfa-crm-api",
              "iat": now, "exp": now + dt.timedelta(minutes=5)}
    claims.update(over)
    return claims


def test_a_good_token_becomes_a_principal(verifier):
    p = verifier.verify(issue_token(secret=SECRET, user_id="u1", role="manager", teams=["t1"], manages=["t1", "t2"]))
    assert (p.user_id, p.role, p.teams, p.manages, p.primary_team) == ("u1", "manager", ("t1",), ("t1", "t2"), "t1")


@pytest.mark.parametrize("claims", [
    _claims(exp=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)),
    _claims(iss="someone-else"),
    _claims(aud="another-api"),
    _claims(role="superuser"),
    _claims(teams="t1"),
    {k: v for k, v in _claims().items() if k != "exp"},
    {k: v for k, v in _claims().items() if k != "role"},
])
def test_bad_claims_are_refused(verifier, claims):
    with pytest.raises(Unauthorized):
        verifier.verify(jwt.encode(claims, SECRET, algorithm="HS256"))


def test_wrong_signature_is_refused(verifier):
    with pytest.raises(Unauthorized):
        verifier.verify(jwt.encode(_claims(), "another-secret-another-secret-0123456789", algorithm="HS256"))


def test_alg_none_is_refused(verifier):
    header = base64.urlsafe_b64encode(json.dumps({"alg": "none", "typ": "JWT"}).encode()).rstrip(b"=")
    body = base64.urlsafe_b64encode(json.dumps(_claims(iat=1, exp=2**31)).encode()).rstrip(b"=")
    with pytest.raises(Unauthorized):
        verifier.verify(f"{header.decode()}.{body.decode()}.")


def test_tampered_claims_are_refused(verifier):
    token = issue_token(secret=SECRET, user_id="u1", role="rep")
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["role"] = "executive"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(Unauthorized):
        verifier.verify(f"{header}.{forged}.{signature}")


def test_rs256_deployment_refuses_hs256_signed_with_the_public_key(monkeypatch):
    """Key confusion: an attacker signs HS256 using the (public) RSA key as the HMAC secret."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    monkeypatch.delenv("CRM_JWT_SECRET", raising=False)
    monkeypatch.setenv("CRM_JWT_PUBLIC_KEY", public_pem)
    verifier = TokenVerifier(load_settings("leads"))
    assert verifier.verify(jwt.encode(_claims(), key, algorithm="RS256")).user_id == "u1"
    header = base64.urlsafe_b64encode(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()).rstrip(b"=").decode()
    body = base64.urlsafe_b64encode(json.dumps(_claims(iat=1, exp=2**31)).encode()).rstrip(b"=").decode()
    import hashlib
    import hmac
    sig = hmac.new(public_pem.encode(), f"{header}.{body}".encode(), hashlib.sha256).digest()
    forged = f"{header}.{body}.{base64.urlsafe_b64encode(sig).rstrip(b'=').decode()}"
    with pytest.raises(Unauthorized):
        verifier.verify(forged)
