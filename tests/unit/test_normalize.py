from __future__ import annotations

import pytest

from pipeline.normalize import normalise, normalise_value, parse_identifier_key
from schemas.events import Identifier


@pytest.mark.parametrize(
    ("id_type", "raw", "expected"),
    [
        ("email", "  Alice@Example.COM ", "alice@example.com"),
        ("email", "ÅSA@Example.se", "åsa@example.se"),
        ("phone", "(415) 555-0100", "+14155550100"),
        ("phone", "+44 20 7946 0958", "+442079460958"),
        ("phone", "011 44 20 7946 0958", "+442079460958"),
        ("user_id", "  u-42 ", "u-42"),
        ("anonymous_id", "a1b2", "a1b2"),
        ("crm_id", " CRM-7 ", "CRM-7"),
        ("instagram", "@Dana.Reyes", "dana.reyes"),
        ("whatsapp", "+1 415 555 0100", "+14155550100"),
    ],
)
def test_values_normalise_to_one_spelling(id_type: str, raw: str, expected: str) -> None:
    assert normalise_value(id_type, raw) == expected


@pytest.mark.parametrize(
    ("id_type", "raw", "reason"),
    [
        ("email", "not-an-email", "not an email"),
        ("email", "a@b", "not an email"),
        ("phone", "12", "phone"),
        ("phone", "call me", "phone"),
        ("anonymous_id", " null ", "blocked"),
        ("user_id", "undefined", "blocked"),
        ("email", "   ", "empty"),
        ("user_id", "0000", "blocked"),
        ("user_id", "xxxxxxxx", "blocked"),
        ("email", "TEST@test.com", "blocked"),
        ("fax", "123", "unknown identifier type"),
        ("instagram", "@@bad handle", "handle"),
    ],
)
def test_unusable_values_are_rejected_with_a_reason(id_type: str, raw: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        normalise_value(id_type, raw)


def test_normalise_dedupes_keeps_verified_and_reports_rejects() -> None:
    result = normalise(
        [
            Identifier(type="email", value="Alice@example.com"),
            Identifier(type="email", value="alice@example.com ", verified=True),
            Identifier(type="phone", value="nope"),
            Identifier(type="anonymous_id", value="anon-1"),
        ]
    )
    assert [i.key for i in result.identifiers] == ["email:alice@example.com", "anonymous_id:anon-1"]
    assert result.identifiers[0].verified is True
    assert [r.identifier.type for r in result.rejected] == ["phone"]
    assert "phone" in str(result.rejected[0])


def test_parse_identifier_key() -> None:
    assert parse_identifier_key("email: Bob@X.org").key == "email:bob@x.org"
    for bad, reason in (
        ("email", "type:value"),
        ("email:", "type:value"),
        (":x", "identifier type"),
        ("Bad Type:x", "identifier type"),
        ("email:nope", "not an email"),
    ):
        with pytest.raises(ValueError, match=reason):
            parse_identifier_key(bad)
