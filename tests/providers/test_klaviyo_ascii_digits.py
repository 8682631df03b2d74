"""Klaviyo takes ASCII digits only: a revision written with others is refused at configure(), as the
README promises for any bad value, instead of every batch failing later when the header cannot be
written; a phone number written with others stays an event property, off the profile Klaviyo would
refuse (with the events of its request)."""

from __future__ import annotations

import pytest

import evmiddleware
from evmiddleware.errors import ConfigurationError
from evmiddleware.providers.klaviyo import Klaviyo, check_revision
from evmiddleware.sandbox import Sandbox

NOT_ASCII_DIGITS = [
    "\uff12\uff10\uff12\uff15-\uff11\uff10-\uff11\uff15",  # full-width, as an IME types 2025-10-15
    "\u0662\u0660\u0662\u0665-\u0661\u0660-\u0661\u0665",  # Arabic-Indic digits
    "2025-10-\uff11\uff15",  # only the day
]


@pytest.mark.parametrize("revision", NOT_ASCII_DIGITS)
def test_a_revision_with_non_ascii_digits_is_refused_at_configure(revision):
    with pytest.raises(ConfigurationError, match="klaviyo_revision"):
        evmiddleware.configure(
            klaviyo_public_key="AbC123", klaviyo_url="http://127.0.0.1:9", klaviyo_revision=revision
        )
    with pytest.raises(ConfigurationError, match="klaviyo_revision"):
        Klaviyo("AbC123", revision=revision)


def test_a_revision_is_matched_whole_and_padding_is_stripped():
    assert check_revision(" 2025-10-15.pre\n") == "2025-10-15.pre"
    with pytest.raises(ConfigurationError, match="klaviyo_revision"):
        check_revision("2025-10-15\nX")


def test_a_phone_number_with_full_width_digits_is_not_put_on_the_profile():
    phone = "+1\uff15\uff15\uff15\uff15\uff15\uff15\uff10\uff11\uff12\uff13"
    with Sandbox() as sandbox:
        evmiddleware.configure(
            klaviyo_public_key=sandbox.keys.klaviyo_company_id,
            klaviyo_url=sandbox.base_url("klaviyo"),
            flush_interval=0.05,
        )
        evmiddleware.identify("u1", phone_number=phone, email="ann@example.com\n")
        assert evmiddleware.flush(10)
        [event] = sandbox.accepted("klaviyo")
    profile = event["profile"]["attributes"]
    assert "phone_number" not in profile
    assert event["attributes"]["properties"]["phone_number"] == phone
    assert profile["email"] == "ann@example.com"  # stripped, then matched whole
