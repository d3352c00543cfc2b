"""Uploaded CSV files as spreadsheets write them: UTF-8 (with or without Excel's BOM) or GB18030,
which Chinese Excel writes; header names matched ignoring case, spaces, underscores and hyphens.
Read as a stream: the whole file is never held as text."""
from __future__ import annotations

import codecs
import csv
import io

from .errors import ValidationFailed


def encoding_of(content: bytes) -> str:
    """The file's encoding, checked piece by piece; 422 when it is neither."""
    for encoding in ("utf-8-sig", "gb18030"):
        decoder = codecs.getincrementaldecoder(encoding)()
        try:
            for start in range(0, len(content), 1 << 20):
                decoder.decode(content[start:start + (1 << 20)])
            decoder.decode(b"", final=True)
            return encoding
        except UnicodeDecodeError:
            continue
    raise ValidationFailed("the file is neither UTF-8 nor GB18030 text", errors={"file": ["not a text CSV"]})


def reader(content: bytes, encoding: str):
    return csv.reader(io.TextIOWrapper(io.BytesIO(content), encoding=encoding, newline=""))


def header_key(header: str) -> str:
    return "".join(ch for ch in header.strip().casefold() if ch not in " _-\ufeff")
