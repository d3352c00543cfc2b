"""One OpenAPI document for the whole CRM: the gateway's own routes plus every service's, as the
policy exposes them. Fetched from the services (their /openapi.json) and cached briefly; a service
that is down is listed under `x-unavailable` rather than failing the document."""
from __future__ import annotations

import copy
import json
import re
import threading
import time

from .policy import RoutePolicy
from .upstream import Upstreams

_REF = re.compile(r'"#/components/(\w+)/([^"]+)"')


def _rename_refs(doc: dict, renames: dict[tuple[str, str], str]) -> dict:
    if not renames:
        return doc
    text = json.dumps(doc)
    text = _REF.sub(lambda m: f'"#/components/{m[1]}/{renames.get((m[1], m[2]), m[2])}"', text)
    return json.loads(text)


def _clashes(components: dict, spec: dict, service: str) -> dict[tuple[str, str], str]:
    """The service's components to rename (`service.Name`): those whose name is taken by a different
    one. Until nothing changes: renaming one (Activity) changes those that refer to it (ActivityPage),
    which then clash too, although their text was the same before."""
    renames: dict[tuple[str, str], str] = {}
    while True:
        renamed = _rename_refs(spec, renames)
        found = {(section, name): f"{service}.{name}"
                 for section, entries in (renamed.get("components") or {}).items()
                 for name, value in entries.items()
                 if name in components.get(section, {}) and components[section][name] != value}
        if found.keys() <= renames.keys():
            return renames
        renames.update(found)


class SpecMerger:
    def __init__(self, upstreams: Upstreams, policy: RoutePolicy, own_spec, cache_seconds: float):
        self.upstreams = upstreams
        self.policy = policy
        self.own_spec = own_spec  # () -> the gateway's own spec (flask-smorest)
        self.cache_seconds = cache_seconds
        self._cached: tuple[float, dict] | None = None
        self._lock = threading.Lock()

    def document(self) -> dict:
        with self._lock:
            if self._cached and time.monotonic() - self._cached[0] < self.cache_seconds:
                return self._cached[1]
            doc = self._merge()
            self._cached = (time.monotonic(), doc)
            return doc

    def _fetch(self, service: str) -> dict | None:
        try:
            answer = self.upstreams[service].request("GET", "/openapi.json", headers={"Accept": "application/json"},
                                                     timeout=3)
            return answer.json() if answer.status == 200 else None
        except Exception:  # noqa: BLE001 - a service that cannot describe itself is left out
            return None

    def _exposed(self, service: str, path: str, method: str) -> bool:
        # The services name their parameters ({lead_id}); the policy says {id}. Compare by shape.
        concrete = re.sub(r"\{[^}]+\}", "x", path)
        route = self.policy.match(concrete)
        return route is not None and route.service == service and method.upper() in route.allowed

    def _merge(self) -> dict:
        doc = copy.deepcopy(self.own_spec())
        doc["info"] = {"title": "SFA CRM API", "version": doc.get("info", {}).get("version", "1.0.0"),
                       "description": "Every CRM route, through the gateway (the only public entry)."}
        components = doc.setdefault("components", {})
        unavailable = []
        for service in sorted(self.policy.services() - {"gateway"}):
            spec = self._fetch(service)
            if spec is None:
                unavailable.append(service)
                continue
            renames = _clashes(components, spec, service)
            spec = _rename_refs(spec, renames)
            for section, entries in (spec.get("components") or {}).items():
                for name, value in entries.items():
                    components.setdefault(section, {})[renames.get((section, name), name)] = value
            for path, operations in (spec.get("paths") or {}).items():
                kept = {m: op for m, op in operations.items()
                        if m == "parameters" or self._exposed(service, path, m)}
                if set(kept) - {"parameters"}:
                    doc.setdefault("paths", {})[path] = kept
        if unavailable:
            doc["x-unavailable"] = unavailable
        return doc


DOCS_HTML = """<!doctype html>
<html><head><meta charset="utf-8"><title>SFA CRM API</title>
<link rel="stylesheet" href="{ui}swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="{ui}swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({{url: "/openapi.json", dom_id: "#swagger-ui", persistAuthorization: true}});</script>
</body></html>"""
