"""Reading, checking and adopting anonymous ids; the Set-Cookie value."""

from __future__ import annotations

import base64
import json
import uuid

import pytest

from evmiddleware.identity import (
    BROWSER_ID_COOKIES,
    CookieWriter,
    adopt_browser_id,
    check_cookie_name,
    cookie_value,
    is_valid_id,
    klaviyo_exchange_id,
    new_anonymous_id,
)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("ev_anon_id=abc", "abc"),
        ("a=1; ev_anon_id=abc; b=2", "abc"),
        ("a=1;ev_anon_id=abc", "abc"),
        ("a=1;   ev_anon_id = abc", None),  # "ev_anon_id " is another name
        ("a=1;\t ev_anon_id=abc", "abc"),
        ("a=1 ;  ev_anon_id= abc ", "abc"),
        (" ev_anon_id=abc", "abc"),
        ("a=1,ev_anon_id=abc", None),
        ('ev_anon_id="abc"', "abc"),
        ("xev_anon_id=no; ev_anon_id=yes", "yes"),
        ("ev_anon_id=first; ev_anon_id=second", "first"),
        ("ev_anon_id=", ""),
        ("other=ev_anon_id=abc", None),
        ("", None),
    ],
)
def test_cookie_value_finds_only_a_whole_cookie_pair(header, expected):
    assert cookie_value(header, "ev_anon_id") == expected


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        (str(uuid.uuid4()), True),
        ("AbC-_.:+/=~09", True),
        ("", False),
        ("a" * 128, True),
        ("a" * 129, False),
        ("has space", False),
        ("semi;colon", False),
        ('quo"te', False),
        ("<script>", False),
        ("é", False),
        ("line\nbreak", False),
        ("ab\x00", False),
        ("\u0660\u0661", False),  # Arabic-Indic digits: isalnum(), but not ASCII
    ],
)
def test_is_valid_id_checks_charset_and_length(value, valid):
    assert is_valid_id(value) is valid


def test_new_anonymous_id_is_a_uuid4():
    value = new_anonymous_id()
    assert uuid.UUID(value).version == 4
    assert is_valid_id(value)
    assert value != new_anonymous_id()


def _kla(payload: dict[str, object]) -> str:
    return base64.b64encode(json.dumps(payload).encode()).decode()


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("uf-anonymousId=uf-123", ("uf-123", "uf-anonymousId")),
        ("ajs_anonymous_id=%22seg-9%22", ("seg-9", "ajs_anonymous_id")),
        ('ajs_anonymous_id="seg-9"', ("seg-9", "ajs_anonymous_id")),
        ("ajs_anonymous_id=seg-9", ("seg-9", "ajs_anonymous_id")),
        (f"__kla_id={_kla({'cid': 'x', '$exchange_id': 'kx.ABC_1'})}", ("kx.ABC_1", "__kla_id")),
        (f"__kla_id={_kla({'cid': 'x', '$exchange_id': 'kx.ABC_1'}).rstrip('=')}", ("kx.ABC_1", "__kla_id")),
        (f"__kla_id={_kla({'cid': 'x'})}", None),
        ("__kla_id=not-base64-json", None),
        ("ajs_anonymous_id=%22bad%20id%22", None),
        ("uf-anonymousId=uf-1; ajs_anonymous_id=seg-2", ("uf-1", "uf-anonymousId")),
        ("uf-anonymousId=<bad>; ajs_anonymous_id=seg-2", ("seg-2", "ajs_anonymous_id")),
        ("theme=dark", None),
    ],
)
def test_adopt_browser_id_reads_each_sdk_cookie(header, expected):
    assert adopt_browser_id(header, BROWSER_ID_COOKIES) == expected


def test_adopt_browser_id_only_looks_at_the_configured_names():
    assert adopt_browser_id("uf-anonymousId=uf-1", ("ajs_anonymous_id",)) is None


def test_set_cookie_value_has_the_documented_attributes():
    writer = CookieWriter("ev_anon_id", 31536000)
    assert (
        writer.header("abc", secure=False)
        == "ev_anon_id=abc; Path=/; Max-Age=31536000; SameSite=Lax; HttpOnly"
    )
    assert writer.header("abc", secure=True).endswith("; HttpOnly; Secure")
    with_domain = CookieWriter("id", 60, ".example.com").header("abc", secure=True)
    assert with_domain == "id=abc; Path=/; Max-Age=60; SameSite=Lax; HttpOnly; Secure; Domain=.example.com"


@pytest.mark.parametrize(
    ("name", "max_age", "domain"),
    [("bad name", 60, None), ("", 60, None), ("ok", 0, None), ("ok", True, None), ("ok", 60, "ex ample.com")],
)
def test_cookie_writer_refuses_unusable_settings(name, max_age, domain):
    with pytest.raises(ValueError):
        CookieWriter(name, max_age, domain)


def test_check_cookie_name_accepts_tokens():
    assert check_cookie_name("ev_anon_id") == "ev_anon_id"
    with pytest.raises(ValueError):
        check_cookie_name("a;b")


def test_klaviyo_exchange_id_is_read_validated_and_cached():
    from evmiddleware import identity

    good = _kla({"$exchange_id": "kx.Good_1"})
    assert klaviyo_exchange_id(f"a=1; __kla_id={good}") == "kx.Good_1"
    assert identity._exchange_ids[good] == "kx.Good_1"
    assert klaviyo_exchange_id(f"__kla_id={_kla({'$exchange_id': 'bad id'})}") is None
    assert klaviyo_exchange_id("a=1") is None


def test_a_klaviyo_cookie_nested_too_deep_is_ignored():
    deep = base64.b64encode(b"[" * 2000).decode()  # json.loads raises RecursionError
    assert klaviyo_exchange_id(f"__kla_id={deep}") is None
    assert adopt_browser_id(f"__kla_id={deep}", BROWSER_ID_COOKIES) is None
