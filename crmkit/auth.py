"""JWT verification into a Principal (CONTRACT §2), and token issuing for the gateway and tests.

Only one algorithm family is accepted per deployment (HS256 with a shared secret, or RS256 with
a public key or JWKS), so a token signed with the public key as an HMAC secret, or `alg=none`,
never verifies.
"""
from __future__ import annotations

import datetime as dt
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import jwt

from .problems import Problem
from .settings import Settings

ROLES = ("rep", "manager", "executive", "marketing", "service", "admin")


class Unauthorized(Problem):
    status = 401

    def __init__(self, detail: str):
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="sfa-crm"'})


@dataclass(frozen=True)
class Principal:
    user_id: str
    role: str
    name: str = ""
    teams: tuple[str, ...] = ()
    manages: tuple[str, ...] = field(default=())
    token_version: int | None = None  # the `ver` claim: the gateway refuses tokens made stale since

    @property
    def primary_team(self) -> str | None:
        return self.teams[0] if self.teams else None


class TokenVerifier:
    def __init__(self, settings: Settings, *, cache_size: int = 0):
        # cache_size > 0: remember tokens already verified (until they expire), so a client sending
        # the same token on every request pays for the signature check once. The gateway does.
        self._cache: OrderedDict[str, tuple[Principal, float]] | None = OrderedDict() if cache_size else None
        self._cache_size = cache_size
        self._cache_lock = threading.Lock()
        self.issuer = settings.jwt_issuer
        self.audience = settings.jwt_audience
        self._jwks = None
        if settings.jwt_jwks_url:
            self._jwks = jwt.PyJWKClient(settings.jwt_jwks_url, cache_keys=True)
            self._key, self.algorithms = None, ["RS256"]
        elif settings.jwt_public_key:
            self._key, self.algorithms = settings.jwt_public_key, ["RS256"]
        elif settings.jwt_secret:
            self._key, self.algorithms = settings.jwt_secret, ["HS256"]
        else:
            raise RuntimeError("set CRM_JWT_SECRET, CRM_JWT_PUBLIC_KEY or CRM_JWT_JWKS_URL")

    def verify(self, token: str) -> Principal:
        if self._cache is None:
            return self._verify(token)[0]
        with self._cache_lock:
            hit = self._cache.get(token)
        if hit is not None and time.time() < hit[1]:
            return hit[0]
        principal, expires_at = self._verify(token)
        with self._cache_lock:
            self._cache[token] = (principal, expires_at)
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return principal

    def _verify(self, token: str) -> tuple[Principal, float]:
        try:
            key = self._jwks.get_signing_key_from_jwt(token).key if self._jwks else self._key
            claims = jwt.decode(token, key, algorithms=self.algorithms, audience=self.audience, issuer=self.issuer,
                                options={"require": ["sub", "role", "iss", "aud", "iat", "exp"]}, leeway=5)
        except jwt.ExpiredSignatureError:
            raise Unauthorized("token expired") from None
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid token: {exc}") from None
        role = claims.get("role")
        teams, manages = claims.get("teams", []), claims.get("manages", [])
        if role not in ROLES or not isinstance(teams, list) or not isinstance(manages, list):
            raise Unauthorized("invalid token: bad role or team claims")
        ver = claims.get("ver")
        return Principal(user_id=str(claims["sub"]), role=role, name=str(claims.get("name", "")),
                         teams=tuple(map(str, teams)), manages=tuple(map(str, manages)),
                         token_version=ver if isinstance(ver, int) and not isinstance(ver, bool) else None
                         ), float(claims["exp"])


def issue_token(*, secret: str, user_id: str, role: str, name: str = "", teams=(), manages=(),
                issuer: str = "sfa-crm", audience: str = "sfa-crm-api", ttl_seconds: int = 900,
                algorithm: str = "HS256", key_id: str | None = None, extra: dict | None = None) -> str:
    """`secret` is the HMAC secret for HS256 or the PEM private key for RS256."""
    now = dt.datetime.now(dt.UTC)
    return jwt.encode({
        "sub": str(user_id), "name": name, "role": role, "teams": [str(t) for t in teams],
        "manages": [str(t) for t in manages], "iss": issuer, "aud": audience,
        "iat": now, "exp": now + dt.timedelta(seconds=ttl_seconds), **(extra or {}),
    }, secret, algorithm=algorithm, headers={"kid": key_id} if key_id else None)
