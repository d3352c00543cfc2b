"""Text that can be stored: JSON may carry a lone UTF-16 surrogate ("\ud800"), which Python decodes
into a str that no database encoding (and no UTF-8 encoder) accepts. Such text is refused where it
comes in (422 for a request, a dead letter for an event), never discovered at the INSERT."""
from __future__ import annotations


def unpaired_surrogate_at(value, path: str = "") -> str | None:
    """The path (e.g. `company`, `rules[2].name`) of the first string holding an unpaired surrogate
    in a decoded JSON document, or None."""
    stack = [(path, value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return where or "body"
        elif isinstance(item, dict):
            for key, child in item.items():
                if isinstance(key, str) and unpaired_surrogate_at(key) is not None:
                    return where or "body"
                stack.append((f"{where}.{key}" if where else str(key), child))
        elif isinstance(item, list):
            stack.extend((f"{where}[{i}]", child) for i, child in enumerate(item))
    return None
