"""Personal data in prompts: find it, then mask it or drop the prompt.

The deciding checks come from maintained libraries; a short regular expression only proposes
candidate spans (and skips texts that cannot hold the entity at all, which keeps a million prompts
fast):

==================  ===================================  ============================================
entity              candidate                            decided by
==================  ===================================  ============================================
``email``           ``local@domain.tld``                 shape check (letters-only top-level domain)
``phone``           7+ digits in one group               ``phonenumbers`` (Google's libphonenumber):
                                                         a valid number for one of ``phone_regions``
                                                         or in international ``+`` form
``credit_card``     13-19 digits, spaces/dashes allowed  ``stdnum.luhn`` checksum, issuer digit 2-6
``national_id``     per format (see ``NATIONAL_IDS``)    ``python-stdnum``'s validator of that format
``ip_address``      dotted quad / colon-hex              ``ipaddress``; by default only public
                                                         (globally routable) addresses count
``iban``            country code, 2 check digits, BBAN   ``stdnum.iban`` (length per country, mod 97)
``street_address``  house number + street-type word      ``pyap``: a full US/GB/CA postal address
                                                         (with a postal code or a capitalized
                                                         street name)
==================  ===================================  ============================================

Numbers that merely look like PII are left alone: a Luhn-invalid 16-digit number, a version
string (``1.2.3.4.5``), dates, prices, decimals such as ``3.14159265358``, private IP addresses.
"""

from __future__ import annotations

import dataclasses
import importlib
import ipaddress
import re
from collections.abc import Sequence

ENTITIES = ("email", "phone", "credit_card", "national_id", "ip_address", "iban", "street_address")

#: national id formats: stdnum module -> candidate pattern (the module's ``is_valid`` decides)
NATIONAL_IDS = {
    "us.ssn": r"(?<![\d-])\d{3}[- ]\d{2}[- ]\d{4}(?![\d-])",  # US social security number
    "es.dni": r"(?<![\w-])\d{8}-?[A-Za-z](?!\w)",  # Spanish DNI (check letter)
    "in_.aadhaar": r"(?<!\d)(?<!\d )[2-9]\d{3} \d{4} \d{4}(?![\d])",  # Indian Aadhaar (Verhoeff)
    "gb.nhs": r"(?<!\d)(?<!\d )\d{3} \d{3} \d{4}(?! ?\d)",  # UK NHS number (mod 11)
    "de.idnr": r"(?<![\d])[1-9]\d{10}(?!\d)",  # German tax id (ISO 7064 check digit)
}

_DIGIT = re.compile(r"\d")
_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,24}(?![\w-])")
# a digit group with phone punctuation, not glued to a word, a longer number or a decimal point
_PHONE_CANDIDATE = re.compile(r"(?<![\w.,+\-/])(?:\+|\(\+?)?\d(?:[ ().\-/]{0,3}\d){6,}\)?(?![\w]|[.,/\-]\d)")
_CARD = re.compile(r"(?<![\d.,-])\d(?:[ -]?\d){12,18}(?![\d]|[.,]\d)")
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?!\.?\d|\w)")
_IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:[A-Z0-9]{11,30}|(?: [A-Z0-9]{4}){2,7}(?: [A-Z0-9]{1,4})?)\b")
_STREET_GATE = re.compile(
    r"\b\d{1,6}[A-Za-z]?,?\s+(?:[\w.'-]+\s+){0,5}?"
    r"(?:street|st|avenue|ave|road|rd|boulevard|blvd|lane|ln|drive|dr|court|ct|way|place|pl|terrace|"
    r"square|sq|highway|hwy|parkway|pkwy|circle|cir|crescent|close|row|walk|gardens|hill|park)\b",
    re.IGNORECASE,
)


@dataclasses.dataclass(frozen=True)
class Finding:
    """One piece of personal data: ``text[start:end]`` is a ``entity``."""

    entity: str
    start: int
    end: int
    value: str


class PIIDetector:
    """Finds the ``entities`` in a text; :meth:`mask` replaces them."""

    def __init__(
        self,
        entities: Sequence[str] = ENTITIES,
        phone_regions: Sequence[str] = ("US", "GB"),
        address_countries: Sequence[str] = ("US", "GB", "CA"),
        national_ids: Sequence[str] = ("us.ssn", "es.dni", "in_.aadhaar"),
        ip_public_only: bool = True,
        mask_format: str = "[{ENTITY}]",
    ):
        unknown = [e for e in entities if e not in ENTITIES]
        if unknown:
            raise ValueError(f"unknown PII entities {unknown}; valid: {', '.join(ENTITIES)}")
        self.entities = tuple(entities)
        self.phone_regions = tuple(r.upper() for r in phone_regions)
        self.address_countries = tuple(c.upper() for c in address_countries)
        self.ip_public_only = ip_public_only
        self.mask_format = mask_format
        self._ids = []
        for name in national_ids:
            if name not in NATIONAL_IDS:
                raise ValueError(f"unknown national id format {name!r}; known: {', '.join(NATIONAL_IDS)}")
            module = importlib.import_module(f"stdnum.{name}")
            self._ids.append((re.compile(NATIONAL_IDS[name]), module.is_valid))
        if "phone" in self.entities:
            import phonenumbers

            self._phonenumbers = phonenumbers
            # digit counts a number of each region can have written out: national number
            # lengths, plus the national prefix (0...), the country code (+44 / 44...) or the
            # international call prefix with the country code (00 44... / 011 1...)
            self._phone_lengths = {}
            for region in self.phone_regions:
                md = phonenumbers.PhoneMetadata.metadata_for_region(region)
                if md is None:
                    raise ValueError(f"unknown phone region {region!r} (use ISO 3166 codes such as US, GB, DE)")
                cc = len(str(md.country_code))
                idd = max((len(x) for x in (md.international_prefix or "").split("|") if x.isdigit()), default=2)
                extra = (0, len(md.national_prefix or ""), cc, cc + idd)
                self._phone_lengths[region] = {n + e for n in md.general_desc.possible_length for e in extra}
        if "street_address" in self.entities:
            import pyap

            self._pyap = pyap
        from stdnum import iban, luhn

        self._luhn, self._iban = luhn, iban

    # ------------------------------------------------------------------ detection per entity

    def _emails(self, text: str) -> list[Finding]:
        out = []
        for m in _EMAIL.finditer(text):
            local = m.group().split("@", 1)[0]
            if local.startswith(".") or local.endswith(".") or ".." in local:
                continue
            out.append(Finding("email", m.start(), m.end(), m.group()))
        return out

    def _phones(self, text: str) -> list[Finding]:
        """Each digit group that could be a phone number (7-15 digits, E.164's range) is parsed by
        libphonenumber for each region; a valid number is a finding. Parsing the short candidate
        instead of scanning the whole text with PhoneNumberMatcher is ~10x faster on long prompts;
        a group with more digits (two numbers written side by side) goes to the matcher."""
        pn = self._phonenumbers
        out = []
        for m in _PHONE_CANDIDATE.finditer(text):
            cand = m.group()
            n_digits = sum(ch.isdigit() for ch in cand)
            if n_digits < 7:
                continue
            if n_digits > 15:
                for region in self.phone_regions:
                    for pm in pn.PhoneNumberMatcher(cand, region, leniency=pn.Leniency.VALID):
                        out.append(Finding("phone", m.start() + pm.start, m.start() + pm.end, pm.raw_string))
                continue
            international = cand.lstrip("(").startswith("+")
            for region in self.phone_regions:
                if not international and n_digits not in self._phone_lengths[region]:
                    continue  # cannot be a number of this region: skip the (slower) parse
                try:
                    number = pn.parse(cand, region)
                except pn.NumberParseException:
                    continue
                if pn.is_valid_number(number):
                    out.append(Finding("phone", m.start(), m.end(), cand))
                    break
        return out

    def _cards(self, text: str) -> list[Finding]:
        out = []
        for m in _CARD.finditer(text):
            digits = re.sub(r"\D", "", m.group())
            if 13 <= len(digits) <= 19 and digits[0] in "23456" and self._luhn.is_valid(digits):
                out.append(Finding("credit_card", m.start(), m.end(), m.group()))
        return out

    def _national_ids(self, text: str) -> list[Finding]:
        out = []
        for pattern, is_valid in self._ids:
            for m in pattern.finditer(text):
                if is_valid(m.group()):
                    out.append(Finding("national_id", m.start(), m.end(), m.group()))
        return out

    def _ips(self, text: str) -> list[Finding]:
        out = []
        candidates = list(_IPV4.finditer(text))
        if text.count(":") >= 2:
            candidates += [m for m in _IPV6.finditer(text) if m.group().count(":") >= 2]
        for m in candidates:
            try:
                addr = ipaddress.ip_address(m.group())
            except ValueError:
                continue
            if self.ip_public_only and not addr.is_global:
                continue
            out.append(Finding("ip_address", m.start(), m.end(), m.group()))
        return out

    def _ibans(self, text: str) -> list[Finding]:
        return [
            Finding("iban", m.start(), m.end(), m.group())
            for m in _IBAN.finditer(text)
            if self._iban.is_valid(m.group())
        ]

    def _addresses(self, text: str) -> list[Finding]:
        out = []
        end = -1
        for gate in _STREET_GATE.finditer(text):
            if gate.start() < end:
                continue
            # pyap costs milliseconds on a long text: give it the 200 characters from the house number
            lo = gate.start()
            window = text[lo : lo + 200]
            for country in self.address_countries:
                for a in self._pyap.parse(window, country=country):
                    # a street name is a proper noun: "2 hour drive of San Diego, California" is no address
                    name = (a.street_name or "").strip()
                    if not a.postal_code and not name[:1].isupper() and not name[:1].isdigit():
                        continue
                    out.append(Finding("street_address", lo + a.match_start, lo + a.match_end, a.full_address))
                    end = max(end, lo + a.match_end)
        return out

    # ------------------------------------------------------------------ public API

    def find(self, text: str) -> list[Finding]:
        """Non-overlapping findings in text order (a longer span wins over one it overlaps)."""
        has_digit = _DIGIT.search(text) is not None
        if not has_digit and "@" not in text:
            return []
        found: list[Finding] = []
        ents = self.entities
        if "email" in ents and "@" in text:
            found += self._emails(text)
        if has_digit:
            # each entity needs a least number of digits; most prompts hold only a few
            digits = sum(text.count(d) for d in "0123456789")
            if "phone" in ents and digits >= 7:
                found += self._phones(text)
            if "credit_card" in ents and digits >= 13:
                found += self._cards(text)
            if "national_id" in ents and self._ids and digits >= 8:
                found += self._national_ids(text)
            if "ip_address" in ents and (digits >= 4 or text.count(":") >= 2):
                found += self._ips(text)
            if "iban" in ents and digits >= 6:
                found += self._ibans(text)
            if "street_address" in ents:
                found += self._addresses(text)
        if len(found) <= 1:
            return found
        # resolve overlaps: longest first (ties: entity order of ENTITIES), then keep disjoint spans
        found.sort(key=lambda f: (-(f.end - f.start), ENTITIES.index(f.entity), f.start))
        kept: list[Finding] = []
        for f in found:
            if all(f.end <= k.start or f.start >= k.end for k in kept):
                kept.append(f)
        return sorted(kept, key=lambda f: f.start)

    def mask(self, text: str, findings: Sequence[Finding] | None = None) -> str:
        """``text`` with every finding replaced by ``mask_format`` (``[EMAIL]``, ``[PHONE]``...)."""
        findings = self.find(text) if findings is None else findings
        out, pos = [], 0
        for f in sorted(findings, key=lambda f: f.start):
            out.append(text[pos : f.start])
            out.append(self.mask_format.format(ENTITY=f.entity.upper(), entity=f.entity))
            pos = f.end
        out.append(text[pos:])
        return "".join(out)
