"""Normalized keys that decide whether two leads are the same prospect (no I/O).

Two leads are duplicates when they share a normalized email, a normalized phone number, or a
normalized company name together with a normalized contact name. Company names drop case,
punctuation, width differences and legal suffixes in English and Chinese, so
"Acme Co., Ltd." = "ACME co ltd" = "acme", and "华东机械有限公司" = "华东机械股份有限公司" = "华东机械".
"""
from __future__ import annotations

import hashlib
import re
import unicodedata

# Longest first, so "股份有限公司" is removed whole rather than leaving "股份".
_LEGAL_SUFFIXES_ZH = sorted(["股份有限公司", "有限责任公司", "有限公司", "集团公司", "集团", "公司", "分公司", "厂"],
                            key=len, reverse=True)
_LEGAL_WORDS_EN = {
    "co", "company", "corp", "corporation", "inc", "incorporated", "ltd", "limited", "llc", "plc", "gmbh",
    "ag", "sa", "srl", "bv", "pte", "pty", "group", "holdings", "the",
}
_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)


def _fold(text: str) -> str:
    # NFKC folds full-width letters, digits and brackets (common in Chinese input) to ASCII;
    # casefold handles the rest of case.
    return unicodedata.normalize("NFKC", text).casefold().strip()


def email_key(email: str | None) -> str | None:
    if not email or "@" not in email:
        return None
    local, _, domain = _fold(email).rpartition("@")
    if domain in ("gmail.com", "googlemail.com"):
        local = local.split("+", 1)[0].replace(".", "")
        domain = "gmail.com"
    return f"{local}@{domain}" if local and domain else None


def phone_key(phone: str | None, default_country: str = "86") -> str | None:
    """Digits only, with the country prefix made explicit: '+86 138-0000-0000', '0086 13800000000'
    and '138 0000 0000' are one number. Too short to identify anyone → None."""
    if not phone:
        return None
    digits = re.sub(r"\D", "", _fold(phone))
    if digits.startswith("00"):
        digits = digits[2:]
    elif not _fold(phone).startswith("+"):
        digits = digits.lstrip("0")  # national trunk prefix, as in 021-5555-0101
        # A national number (at most 11 digits in China) gets the country code; a longer one that
        # already starts with it was written in international form without the "+".
        if len(digits) <= 11 or not digits.startswith(default_country):
            digits = default_country + digits
    return digits if 8 <= len(digits) <= 20 else None  # E.164 has at most 15 digits; longer is noise


def company_key(company: str | None) -> str | None:
    if not company:
        return None
    text = _fold(company)
    text = re.sub(r"\(.*?\)", " ", text)  # branch markers such as "(上海)" or "(China)", after NFKC
    for suffix in _LEGAL_SUFFIXES_ZH:
        if text.endswith(suffix) and len(text) > len(suffix):
            text = text[: -len(suffix)]
            break
    words = [w for w in _NON_WORD.split(text) if w]
    while len(words) > 1 and words[-1] in _LEGAL_WORDS_EN:
        words.pop()
    if words and words[0] == "the" and len(words) > 1:
        words.pop(0)
    key = "".join(words)
    return key or None


def contact_key(name: str | None) -> str | None:
    if not name:
        return None
    key = "".join(w for w in _NON_WORD.split(_fold(name)) if w)
    return key or None


def _fit(key: str | None, limit: int) -> str | None:
    """Folding can lengthen text (NFKC, 'ß' → 'ss'); a key longer than its column is stored as a
    digest, which still matches the same key and nothing else."""
    if key is None or len(key) <= limit:
        return key
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


# The keys that make two leads duplicates; company_key alone does not (different people at one
# company are different leads) but finds a customer's leads by company name.
DEDUPE_KEYS = ("email_key", "phone_key", "company_contact_key")


def keys_for(fields: dict) -> dict:
    """The key columns of a lead with these fields (each fits its column: see db.Lead)."""
    company, contact = company_key(fields.get("company")), contact_key(fields.get("contact_name"))
    return {
        "email_key": _fit(email_key(fields.get("email")), 320),
        "phone_key": phone_key(fields.get("phone")),
        "company_contact_key": _fit(f"{company}|{contact}" if company and contact else None, 420),
        "company_key": _fit(company, 200),
    }


# Fields that, when they change, change what the dedupe keys or the score say.
KEYED_FIELDS = ("company", "contact_name", "email", "phone")


def refresh_keys(lead) -> None:
    """Recompute a lead's dedupe key columns from its fields."""
    for column, value in keys_for({f: getattr(lead, f) for f in KEYED_FIELDS}).items():
        setattr(lead, column, value)
