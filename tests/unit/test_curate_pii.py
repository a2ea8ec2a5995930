"""PII detection: positives of every entity, and numbers that look like PII but are not."""

from __future__ import annotations

import pytest

pytest.importorskip("phonenumbers")
pytest.importorskip("stdnum")
pytest.importorskip("pyap")

from stdnum import verhoeff  # noqa: E402

from instructrl.data.pii import PIIDetector  # noqa: E402


@pytest.fixture(scope="module")
def det() -> PIIDetector:
    return PIIDetector(national_ids=["us.ssn", "es.dni", "in_.aadhaar", "gb.nhs", "de.idnr"])


def _found(det, text):
    return [(f.entity, f.value) for f in det.find(text)]


def _aadhaar() -> str:
    body = "23456789012"
    return body + verhoeff.calc_check_digit(body)


POSITIVES = [
    ("Write to john.doe+news@example.co.uk today", "email", "john.doe+news@example.co.uk"),
    ("Call me at 415-555-2671 after six", "phone", "415-555-2671"),
    ("office: (415) 555-2671, ask for Jo", "phone", "(415) 555-2671"),
    ("my London number is 020 7946 0958.", "phone", "020 7946 0958"),
    ("reach her on +49 30 901820 please", "phone", "+49 30 901820"),
    ("card 4111 1111 1111 1111 expires soon", "credit_card", "4111 1111 1111 1111"),
    ("Amex 3782-822463-10005 was charged", "credit_card", "3782-822463-10005"),
    ("my SSN is 123-45-6789", "national_id", "123-45-6789"),
    ("DNI 12345678Z en el formulario", "national_id", "12345678Z"),
    ("connect to 8.8.8.8 now", "ip_address", "8.8.8.8"),
    ("the host 2001:4860:4860::8888 is down", "ip_address", "2001:4860:4860::8888"),
    ("IBAN GB82 WEST 1234 5698 7654 32 thanks", "iban", "GB82 WEST 1234 5698 7654 32"),
    ("pay to DE89370400440532013000.", "iban", "DE89370400440532013000"),
    (
        "Ship it to 350 Fifth Avenue, New York, NY 10118 by Monday",
        "street_address",
        "350 Fifth Avenue, New York, NY 10118",
    ),
    ("We live at 10 Downing Street, London SW1A 2AA now", "street_address", "10 Downing Street, London SW1A 2AA"),
]


@pytest.mark.parametrize("text,entity,value", POSITIVES)
def test_positive(det, text, entity, value):
    assert _found(det, text) == [(entity, value)]


def test_aadhaar_positive_and_checksum_near_miss(det):
    good = _aadhaar()
    spaced = f"{good[:4]} {good[4:8]} {good[8:]}"
    assert _found(det, f"aadhaar {spaced} ok") == [("national_id", spaced)]
    bad_digit = str((int(good[-1]) + 1) % 10)
    wrong = f"{good[:4]} {good[4:8]} {good[8:11]}{bad_digit}"
    assert _found(det, f"aadhaar {wrong} ok") == []


NEAR_MISSES = [
    "card 4111 1111 1111 1112 expires",  # Luhn-invalid 16 digits
    "the id 1234567890123456 is a sequence",  # 16 digits, Luhn-invalid
    "upgrade to version 1.2.3.4.5 now",  # version string, not an IP
    "meet on 2023-04-05 at 10:30:15",  # date and time
    "it costs $1,299.99 or 1.299,99 EUR",  # prices
    "pi is 3.14159265358979",  # a decimal
    "the router is at 192.168.1.1 and 127.0.0.1",  # private addresses
    "ISBN 978-3-16-148410-0 is a book",  # ISBN
    "SSN 666-12-3456 and 000-12-3456 are never issued",  # invalid SSN areas
    "email me at name@localhost or at a@b",  # no real domain
    "IBAN GB82WEST12345698765433 has a bad check",  # mod-97 fails
    "within a 2 hour drive of San Diego, California",  # pyap's false address
    "the years 1999 to 2004 and 12345 people",  # plain numbers
    "call extension 1234 or room 101",  # short numbers
]


@pytest.mark.parametrize("text", NEAR_MISSES)
def test_near_miss(det, text):
    assert _found(det, text) == []


def test_mask_replaces_every_finding_and_keeps_the_rest(det):
    text = "Mail a@example.com or call 415-555-2671; card 4111111111111111."
    assert det.mask(text) == "Mail [EMAIL] or call [PHONE]; card [CREDIT_CARD]."


def test_private_ip_counts_when_asked():
    d = PIIDetector(entities=["ip_address"], ip_public_only=False)
    assert [(f.entity, f.value) for f in d.find("gateway 192.168.1.1")] == [("ip_address", "192.168.1.1")]


def test_entity_selection_and_unknown_entity():
    d = PIIDetector(entities=["email"], national_ids=[])
    assert [f.entity for f in d.find("a@example.com 415-555-2671")] == ["email"]
    with pytest.raises(ValueError, match="unknown PII entities"):
        PIIDetector(entities=["passport"])
    with pytest.raises(ValueError, match="unknown national id"):
        PIIDetector(national_ids=["xx.id"])
