"""`requirements-runtime.lock`: the part of requirements.lock the images need (the project's runtime
dependencies and everything they pull in), so images carry no test or lint tools.
`python -m deploy.runtime_lock` rewrites it; `--check` fails when it is stale (a test runs it)."""
from __future__ import annotations

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent
LOCK, RUNTIME_LOCK = REPO / "requirements.lock", REPO / "requirements-runtime.lock"


def _name(requirement: str) -> str:
    return canonicalize_name(re.split(r"[\s\[<>=!~;(]", requirement.strip(), maxsplit=1)[0])


def _closure(roots: list[str]) -> set[str]:
    """Every distribution the roots need on this interpreter, with the extras they ask for."""
    seen: set[tuple[str, str]] = set()
    todo = [(canonicalize_name(r.name), extra) for r in map(Requirement, roots) for extra in {"", *r.extras}]
    while todo:
        name, extra = todo.pop()
        if (name, extra) in seen:
            continue
        seen.add((name, extra))
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for requirement in map(Requirement, requires):
            if requirement.marker is None or requirement.marker.evaluate({"extra": extra}):
                todo += [(canonicalize_name(requirement.name), e) for e in {"", *requirement.extras}]
    return {name for name, _ in seen}


def runtime_lock() -> str:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    roots = project["dependencies"]
    keep = _closure(roots)
    pinned = [line for line in LOCK.read_text().splitlines() if line and not line.startswith("#")]
    lines = [line for line in pinned if _name(line) in keep]
    return "# The runtime part of requirements.lock, for the images (python -m deploy.runtime_lock).\n" + \
        "\n".join(lines) + "\n"


def main() -> None:
    content = runtime_lock()
    if "--check" in sys.argv:
        if not RUNTIME_LOCK.exists() or RUNTIME_LOCK.read_text() != content:
            sys.exit("requirements-runtime.lock is stale: python -m deploy.runtime_lock")
        return
    RUNTIME_LOCK.write_text(content)


if __name__ == "__main__":
    main()
