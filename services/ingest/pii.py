"""The PII guard: string fields a schema declares ``pii: reject | mask | hash`` are checked for e-mail
addresses, phone numbers and payment-card numbers (Luhn-checked), then refused, masked or hashed."""

from __future__ import annotations

import hashlib
import re
from typing import Literal

PiiPolicy = Literal["reject", "mask", "hash"]

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_PHONE = re.compile(r"(?<!\w)\+?\d[\d ().-]{7,}\d(?!\w)")
_CARD = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d * 2 > 9 else d * 2
        total += d
    return total % 10 == 0


def _cards(text: str) -> list[re.Match[str]]:
    return [m for m in _CARD.finditer(text) if _luhn(re.sub(r"\D", "", m.group()))]


def _phones(text: str) -> list[re.Match[str]]:
    return [m for m in _PHONE.finditer(text) if 8 <= len(re.sub(r"\D", "", m.group())) <= 15]


def find(text: str) -> list[str]:
    """The kinds of PII in ``text`` (``email``, ``card``, ``phone``)."""
    kinds = []
    if _EMAIL.search(text):
        kinds.append("email")
    cards = _cards(text)
    if cards:
        kinds.append("card")
    card_spans = [m.span() for m in cards]
    if any(not any(a <= m.start() and m.end() <= b for a, b in card_spans) for m in _phones(text)):
        kinds.append("phone")
    return kinds


def mask(text: str) -> str:
    """Every e-mail, card and phone number replaced by ``***`` (a card keeps its last four digits)."""
    text = _EMAIL.sub("***@***", text)
    for m in reversed(_cards(text)):
        digits = re.sub(r"\D", "", m.group())
        text = text[: m.start()] + "****" + digits[-4:] + text[m.end():]
    for m in reversed(_phones(text)):
        text = text[: m.start()] + "***" + text[m.end():]
    return text


def hashed(text: str) -> str:
    """A stable pseudonym: the value's sha256, so joins still work and the value is gone."""
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()
