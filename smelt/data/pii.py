"""PII redaction: e-mail addresses, phone numbers, public IPv4/IPv6 addresses and credit-card numbers (Luhn
checked) are replaced with typed placeholders; counts per type go to the step's statistics (`pii_<type>`).

Precision over recall for phones: a bare run of digits is too often a date, a price or an order number, so a
phone needs a `+country` prefix, an area code in parentheses or the NANP 3-3-4 shape."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from smelt.config import doc
from smelt.data.base import Step
from smelt.data.document import Document

EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
CARD = re.compile(r"(?<![\d-])(?:\d[ -]?){12,18}\d(?![\d-])")
IPV4 = re.compile(r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\d.])")
IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
PHONE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[\s.-]?(?:\(\d{1,4}\)[\s.-]?)?\d{1,4}(?:[\s.-]?\d{2,4}){1,4}"  # +49 30 1234567
    r"|\(\d{2,5}\)[\s.-]?\d{2,4}(?:[\s.-]?\d{2,4}){1,3}"                                 # (030) 123 4567
    r"|\d{3}[.-]\d{3}[.-]\d{4})(?![\w])")                                                 # 555-123-4567


def luhn_ok(digits: str) -> bool:
    total, alt = 0, False
    for ch in reversed(digits):
        d = ord(ch) - 48
        if alt:
            d *= 2
            if d > 9:
                d -= 9
        total += d
        alt = not alt
    return total % 10 == 0


@dataclass
class PIIConfig:
    emails: bool = doc(True, "redact e-mail addresses")
    phones: bool = doc(True, "redact phone numbers")
    ips: bool = doc(True, "redact public IPv4/IPv6 addresses (private, loopback, documentation ranges stay)")
    credit_cards: bool = doc(True, "redact 13-19 digit numbers that pass the Luhn check")
    email_placeholder: str = doc("<EMAIL_ADDRESS>", "replacement for e-mails")
    phone_placeholder: str = doc("<PHONE_NUMBER>", "replacement for phones")
    ip_placeholder: str = doc("<IP_ADDRESS>", "replacement for IP addresses")
    card_placeholder: str = doc("<CREDIT_CARD_NUMBER>", "replacement for card numbers")


class PIIRedactor(Step):
    Config = PIIConfig

    def redact(self, text: str) -> tuple[str, dict[str, int]]:
        c = self.cfg
        counts = {"email": 0, "phone": 0, "ip": 0, "credit_card": 0}

        def sub(kind: str, placeholder: str):
            def f(m: re.Match[str]) -> str:
                counts[kind] += 1
                return placeholder
            return f

        def card(m: re.Match[str]) -> str:
            digits = re.sub(r"\D", "", m.group(0))
            if 13 <= len(digits) <= 19 and luhn_ok(digits):
                counts["credit_card"] += 1
                return c.card_placeholder
            return m.group(0)

        def ip(m: re.Match[str]) -> str:
            try:
                addr = ipaddress.ip_address(m.group(0))
            except ValueError:
                return m.group(0)
            if addr.is_global:
                counts["ip"] += 1
                return c.ip_placeholder
            return m.group(0)

        if c.emails and "@" in text:
            text = EMAIL.sub(sub("email", c.email_placeholder), text)
        if c.credit_cards:
            text = CARD.sub(card, text)
        if c.ips:
            text = IPV4.sub(ip, text)
            if "::" in text or text.count(":") >= 3:
                text = IPV6.sub(ip, text)
        if c.phones:
            text = PHONE.sub(sub("phone", c.phone_placeholder), text)
        return text, counts

    def process(self, d: Document) -> str | None:
        d.text, counts = self.redact(d.text)
        for k, v in counts.items():
            if v:
                self.count(f"pii_{k}", v)
        return None
