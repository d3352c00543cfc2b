"""The route policy (policy.toml) as data: role x method x path pattern -> allow.

`RoutePolicy.decide(method, path, role)` answers before anything is forwarded: which route and
service, or why not (404 no such route, 405 method not allowed, 403 role not allowed).
"""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from crmkit.auth import ROLES
from crmkit.problems import Problem

POLICY_FILE = Path(__file__).with_name("policy.toml")
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class Route:
    path: str
    service: str
    allowed: dict[str, frozenset[str]]  # method -> roles
    public: bool = False
    large_body: bool = False
    timeout: float = 10.0
    pattern: re.Pattern = field(compare=False, default=None)

    @property
    def literal_segments(self) -> int:
        return sum(1 for seg in self.path.split("/") if seg and not _PLACEHOLDER.fullmatch(seg))

    def params(self, path: str) -> dict[str, str]:
        match = self.pattern.fullmatch(path)
        return match.groupdict() if match else {}


class PolicyError(ValueError):
    """policy.toml is malformed; the gateway refuses to start rather than guess."""


def _compile(path: str) -> re.Pattern:
    parts = _PLACEHOLDER.split(path)
    regex = "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>[^/]+)" for i, p in enumerate(parts))
    return re.compile(regex)


class RoutePolicy:
    def __init__(self, routes: list[Route]):
        # Exact paths first, then patterns with more literal segments, so /leads/import wins over
        # /leads/{id}.
        self.routes = sorted(routes, key=lambda r: -r.literal_segments)
        self._exact = {r.path: r for r in routes if not _PLACEHOLDER.search(r.path)}

    @classmethod
    def load(cls, path: Path = POLICY_FILE) -> RoutePolicy:
        doc = tomllib.loads(path.read_text())
        groups = doc.get("groups", {})
        for name, members in groups.items():
            unknown = set(members) - set(ROLES)
            if unknown:
                raise PolicyError(f"group {name}: unknown roles {sorted(unknown)}")
        routes, seen = [], set()
        for entry in doc.get("route", []):
            path, service = entry.get("path"), entry.get("service")
            if not path or not service:
                raise PolicyError(f"route without path or service: {entry}")
            if path in seen:
                raise PolicyError(f"route {path} is listed twice")
            seen.add(path)
            allowed = {}
            for method in METHODS:
                if method in entry:
                    allowed[method] = frozenset(_expand(entry[method], groups, path))
            unknown_keys = set(entry) - set(METHODS) - {"path", "service", "public", "body", "timeout"}
            if unknown_keys:
                raise PolicyError(f"route {path}: unknown keys {sorted(unknown_keys)}")
            routes.append(Route(path=path, service=service, allowed=allowed, public=bool(entry.get("public")),
                                large_body=entry.get("body") == "import", timeout=float(entry.get("timeout", 10)),
                                pattern=_compile(path)))
        return cls(routes)

    def match(self, path: str) -> Route | None:
        route = self._exact.get(path)
        if route is not None:
            return route
        for route in self.routes:
            if route.pattern.fullmatch(path):
                return route
        return None

    def decide(self, method: str, path: str, role: str | None) -> Route:
        """The route, if `role` may call `method` on `path`; else the Problem to answer with."""
        route = self.match(path.rstrip("/") or "/")
        if route is None:
            raise Problem(f"no route {path}", status=404)
        if method in ("HEAD", "OPTIONS") and "GET" in route.allowed:
            method = "GET"
        roles = route.allowed.get(method)
        if roles is None:
            raise Problem(f"method {method} is not allowed on {route.path}", status=405,
                          headers={"Allow": ", ".join(sorted(route.allowed))})
        if not route.public and role not in roles:
            raise Problem(f"role {role!r} may not {method} {route.path}", status=403)
        return route

    def services(self) -> set[str]:
        return {r.service for r in self.routes}


def _expand(names: list[str], groups: dict[str, list[str]], path: str) -> set[str]:
    roles: set[str] = set()
    for name in names:
        if name.startswith("@"):
            if name[1:] not in groups:
                raise PolicyError(f"route {path}: unknown group {name}")
            roles.update(groups[name[1:]])
        elif name in ROLES:
            roles.add(name)
        else:
            raise PolicyError(f"route {path}: unknown role {name}")
    return roles
