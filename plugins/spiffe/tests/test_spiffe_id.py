"""Tests of SPIFFE ID parsing (``korium_spiffe.spiffe_id``) against go-spiffe's strict rules.

The tables are go-spiffe's own (spiffeid/id_test.go and trustdomain_test.go at e9973f63, as
recorded in peers.md 6.2), with go's error strings copied verbatim, plus korium's
``spiffe://{td}/{identity_hex}[/{workload}]`` rules. Whatever text arrives, parse_spiffe_id
returns a SpiffeId or raises SpiffeIdError; never another exception.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from typing import Final, NamedTuple

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from korium_spiffe.spiffe_id import (
    SpiffeId,
    SpiffeIdError,
    identity_of,
    korium_spiffe_id,
    parse_spiffe_id,
    validate_path,
    validate_path_segment,
    validate_spiffe_id,
    validate_trust_domain,
    validate_workload_path,
)

from korium.errors import InvalidIdentityError, KoriumError
from korium.identity import Identity, Keypair

# go-spiffe's spiffeid/errors.go, copied here rather than imported so the module cannot drift.
GO: Final = {
    "empty": "cannot be empty",
    "scheme": "scheme is missing or invalid",
    "trust-domain-missing": "trust domain is missing",
    "trust-domain-chars": "trust domain characters are limited to lowercase letters, numbers, "
    "dots, dashes, and underscores",
    "leading-slash": "path must have a leading slash",
    "path-chars": "path segment characters are limited to letters, numbers, dots, dashes, "
    "and underscores",
    "dot-segment": "path cannot contain dot segments",
    "trailing-slash": "path cannot have a trailing slash",
    "empty-segment": "path cannot contain empty segments",
}
KORIUM_RULES: Final = {
    "trust-domain-mismatch",
    "identity-missing",
    "identity-format",
    "identity-invalid",
}
TD_CHARS: Final = string.ascii_lowercase + string.digits + "._-"
PATH_CHARS: Final = string.ascii_letters + string.digits + "._-"
# Letters and digits outside ASCII that str.isalnum / str.lower / \d based checks would let in.
UNICODE_LOOKALIKES: Final = [
    "\u00e4",  # a with diaeresis
    "\u00e9",  # e acute, two UTF-8 bytes
    "\U0001f92f",  # exploding head, four UTF-8 bytes (go's test case)
    "\u212a",  # Kelvin sign, lowercases to "k"
    "\u0131",  # dotless i, uppercases to "I"
    "\u0663",  # Arabic-Indic digit three, isdigit()
    "\uff41",  # fullwidth "a"
    "\u00a0",  # no-break space
    "\ud800",  # lone surrogate (not encodable as UTF-8 at all)
]

KEY: Final = Keypair.from_seed(bytes(range(32))).identity
HEX: Final = KEY.hex()
TD: Final = "prod.example.com"


class Refused(NamedTuple):
    rule: str


def refused(call: Callable[[], object]) -> SpiffeIdError:
    """Run *call* and return the SpiffeIdError it must raise."""
    with pytest.raises(SpiffeIdError) as info:
        call()
    return info.value


def assert_refused(error: SpiffeIdError, rule: str, shown: str) -> None:
    """The error has *rule*, go's string for it (if any) and names the input *shown*."""
    assert error.rule == rule
    if rule in GO:
        assert GO[rule] in str(error)
    assert repr(shown) in str(error)


# -- go-spiffe's FromString table -------------------------------------------------------------

PARSE_CASES: Final[list[tuple[str, SpiffeId | Refused]]] = [
    # go: valid
    ("spiffe://trustdomain", SpiffeId("trustdomain", "")),
    ("spiffe://trustdomain/path", SpiffeId("trustdomain", "/path")),
    ("spiffe://trustdomain/.path", SpiffeId("trustdomain", "/.path")),
    ("spiffe://trustdomain/..path", SpiffeId("trustdomain", "/..path")),
    ("spiffe://trustdomain/...", SpiffeId("trustdomain", "/...")),
    # go: invalid
    ("", Refused("empty")),
    ("s", Refused("scheme")),
    ("spiffe:/", Refused("scheme")),
    ("Spiffe://", Refused("scheme")),
    ("spiffe:/trustdomain/path", Refused("scheme")),
    ("SPIFFE://trustdomain/path", Refused("scheme")),  # go: URL struct with Scheme "SPIFFE"
    ("spiffe://", Refused("trust-domain-missing")),
    ("spiffe:///", Refused("trust-domain-missing")),
    ("spiffe:///path", Refused("trust-domain-missing")),
    ("spiffe://trustdomain/", Refused("trailing-slash")),
    ("spiffe://trustdomain/path/", Refused("trailing-slash")),
    ("spiffe://trustdomain//", Refused("empty-segment")),
    ("spiffe://trustdomain//path", Refused("empty-segment")),
    ("spiffe://trustdomain/.", Refused("dot-segment")),
    ("spiffe://trustdomain/./path", Refused("dot-segment")),
    ("spiffe://trustdomain/path/./other", Refused("dot-segment")),
    ("spiffe://trustdomain/path/..", Refused("dot-segment")),
    ("spiffe://trustdomain/..", Refused("dot-segment")),
    ("spiffe://trustdomain/../path", Refused("dot-segment")),
    ("spiffe://trustdomain/path/../other", Refused("dot-segment")),
    ("spiffe://%F0%9F%A4%AF/path", Refused("trust-domain-chars")),
    ("spiffe://%62%61%64/path", Refused("trust-domain-chars")),
    ("spiffe://trustdomain/%F0%9F%A4%AF", Refused("path-chars")),
    ("spiffe://trustdomain/%62%61%64", Refused("path-chars")),
    ("spiffe://trust$domain", Refused("trust-domain-chars")),
    ("spiffe://trustdomain/path$", Refused("path-chars")),
    # beyond go's table: URL parts that lenient parsers accept
    ("spiffe://TrustDomain", Refused("trust-domain-chars")),
    ("spiffe://trustdomain:8080/path", Refused("trust-domain-chars")),
    ("spiffe://user@trustdomain/path", Refused("trust-domain-chars")),
    ("spiffe://trustdomain?query", Refused("trust-domain-chars")),
    ("spiffe://trustdomain/path?query", Refused("path-chars")),
    ("spiffe://trustdomain/path#fragment", Refused("path-chars")),
    ("spiffe://trustdomain/pa:th", Refused("path-chars")),  # old lenient go accepted these
    ("spiffe://trustdomain/pa@th", Refused("path-chars")),
    ("spiffe://trustdomain/pa+th", Refused("path-chars")),
    ("spiffe://trustdomain/pa\\th", Refused("path-chars")),
    (" spiffe://trustdomain", Refused("scheme")),
    ("spiffe:", Refused("scheme")),
    ("spiffe//trustdomain", Refused("scheme")),
    ("spiffe://trustdomain ", Refused("trust-domain-chars")),
    ("spiffe://trustdomain\n", Refused("trust-domain-chars")),  # no regex "$" before a newline
    ("spiffe://trustdomain/path\n", Refused("path-chars")),
    ("spiffe://trustdomain/path\x00", Refused("path-chars")),
    ("spiffe://trustdomain/a/b/", Refused("trailing-slash")),
    ("spiffe://trustdomain/a//b", Refused("empty-segment")),
    # go reports the first problem in its left-to-right scan
    ("spiffe://$/", Refused("trust-domain-chars")),
    ("spiffe://trustdomain/$/", Refused("path-chars")),
    ("spiffe://trustdomain//$", Refused("empty-segment")),
    ("spiffe://trustdomain/./$", Refused("dot-segment")),
    ("spiffe://trustdomain/$/.", Refused("path-chars")),
    # beyond go's table: valid corners
    ("spiffe://.", SpiffeId(".", "")),
    ("spiffe://-_.0/A-z_0.9/.../.a./a..", SpiffeId("-_.0", "/A-z_0.9/.../.a./a..")),
    (f"spiffe://{TD}/{HEX}/team/api", SpiffeId(TD, f"/{HEX}/team/api")),
]


@pytest.mark.parametrize(("text", "expected"), PARSE_CASES)
def test_parse_spiffe_id(text: str, expected: SpiffeId | Refused) -> None:
    if isinstance(expected, SpiffeId):
        parsed = parse_spiffe_id(text)
        assert parsed == expected
        assert str(parsed) == text
    else:
        assert_refused(refused(lambda: parse_spiffe_id(text)), expected.rule, text)


def test_spiffe_id_error_is_a_korium_value_error() -> None:
    error = refused(lambda: parse_spiffe_id(""))
    assert isinstance(error, KoriumError)
    assert isinstance(error, ValueError)
    assert str(error) == "SPIFFE ID '' is invalid: cannot be empty"


def test_long_input_is_cut_short_in_the_message() -> None:
    text = "spiffe://trustdomain/" + "a" * 5000 + "$"
    error = refused(lambda: parse_spiffe_id(text))
    assert error.rule == "path-chars"
    assert str(error) == (
        f"SPIFFE ID {text[:300]!r}... (5022 characters) is invalid: {GO['path-chars']}"
    )


def test_parse_refuses_non_text() -> None:
    with pytest.raises(TypeError, match="a SPIFFE ID is text, got bytes"):
        parse_spiffe_id(b"spiffe://trustdomain")  # type: ignore[arg-type]


def test_segments() -> None:
    assert SpiffeId("td").segments == ()
    assert SpiffeId("td", "/a").segments == ("a",)
    assert SpiffeId("td", "/a/.../b").segments == ("a", "...", "b")


# -- every character, as go's loop over bytes 0-255 ---------------------------------------------

ALL_CHARS: Final = [chr(code) for code in range(256) if code != ord("/")]


@pytest.mark.parametrize("char", ALL_CHARS + UNICODE_LOOKALIKES)
def test_trust_domain_characters(char: str) -> None:
    text = f"spiffe://trust{char}domain/path"
    if char in TD_CHARS:
        assert parse_spiffe_id(text) == SpiffeId(f"trust{char}domain", "/path")
        assert validate_trust_domain(f"trust{char}domain") == f"trust{char}domain"
    else:
        assert_refused(refused(lambda: parse_spiffe_id(text)), "trust-domain-chars", text)
        name = f"trust{char}domain"
        error = refused(lambda: validate_trust_domain(name))
        assert_refused(error, "trust-domain-chars", name)


@pytest.mark.parametrize("char", ALL_CHARS + UNICODE_LOOKALIKES)
def test_path_characters(char: str) -> None:
    text = f"spiffe://trustdomain/pa{char}th"
    if char in PATH_CHARS:
        assert parse_spiffe_id(text) == SpiffeId("trustdomain", f"/pa{char}th")
        assert validate_path_segment(f"pa{char}th") == f"pa{char}th"
    else:
        assert_refused(refused(lambda: parse_spiffe_id(text)), "path-chars", text)
        segment = f"pa{char}th"
        error = refused(lambda: validate_path_segment(segment))
        assert_refused(error, "path-chars", segment)


# -- trust domains, paths, segments, FromSegments -----------------------------------------------

TRUST_DOMAIN_CASES: Final[list[tuple[str, str | Refused]]] = [
    ("trustdomain", "trustdomain"),
    ("prod.example.com", "prod.example.com"),
    ("a_b-c.0", "a_b-c.0"),
    ("", Refused("trust-domain-missing")),  # go: TrustDomainFromString("")
    ("Prod.example.com", Refused("trust-domain-chars")),
    ("spiffe://trustdomain", Refused("trust-domain-chars")),  # a name, never an ID
    ("trust domain", Refused("trust-domain-chars")),
]


@pytest.mark.parametrize(("name", "expected"), TRUST_DOMAIN_CASES)
def test_validate_trust_domain(name: str, expected: str | Refused) -> None:
    if isinstance(expected, Refused):
        assert_refused(refused(lambda: validate_trust_domain(name)), expected.rule, name)
    else:
        assert validate_trust_domain(name) == expected


def test_trust_domain_given_as_an_id_gets_a_hint() -> None:
    error = refused(lambda: validate_trust_domain("spiffe://td"))
    assert str(error) == (
        f"trust domain 'spiffe://td' is invalid: {GO['trust-domain-chars']} "
        "(give the bare name, without spiffe://)"
    )


SEGMENT_CASES: Final[list[tuple[str, str | Refused]]] = [
    # go: ValidatePathSegment and FromSegments
    ("", Refused("empty-segment")),
    (".", Refused("dot-segment")),
    ("..", Refused("dot-segment")),
    ("/", Refused("path-chars")),
    ("/foo", Refused("path-chars")),
    ("$", Refused("path-chars")),
    # valid
    ("foo", "foo"),
    ("...", "..."),
    (".a", ".a"),
    ("A-z_0.9", "A-z_0.9"),
]


@pytest.mark.parametrize(("segment", "expected"), SEGMENT_CASES)
def test_validate_path_segment(segment: str, expected: str | Refused) -> None:
    if isinstance(expected, Refused):
        error = refused(lambda: validate_path_segment(segment))
        assert_refused(error, expected.rule, segment)
    else:
        assert validate_path_segment(segment) == expected


@pytest.mark.parametrize(("segment", "expected"), SEGMENT_CASES)
def test_from_segments_one(segment: str, expected: str | Refused) -> None:
    if isinstance(expected, Refused):
        error = refused(lambda: SpiffeId.from_segments("trustdomain", segment))
        assert_refused(error, expected.rule, segment)
    else:
        assert SpiffeId.from_segments("trustdomain", segment) == SpiffeId(
            "trustdomain", f"/{expected}"
        )


FROM_SEGMENTS_CASES: Final[list[tuple[tuple[str, ...], str]]] = [
    ((), "spiffe://trustdomain"),  # go: nil or [] gives no path
    (("a",), "spiffe://trustdomain/a"),
    (("a", "b", "..."), "spiffe://trustdomain/a/b/..."),
]


@pytest.mark.parametrize(("segments", "expected"), FROM_SEGMENTS_CASES)
def test_from_segments(segments: tuple[str, ...], expected: str) -> None:
    spiffe_id = SpiffeId.from_segments("trustdomain", *segments)
    assert str(spiffe_id) == expected
    assert spiffe_id.segments == segments


def test_from_segments_checks_the_trust_domain() -> None:
    error = refused(lambda: SpiffeId.from_segments("", "a"))
    assert_refused(error, "trust-domain-missing", "")


PATH_CASES: Final[list[tuple[str, str | Refused]]] = [
    ("", ""),
    ("/a", "/a"),
    ("/a/b", "/a/b"),
    ("a", Refused("leading-slash")),
    ("/", Refused("trailing-slash")),
    ("/a/", Refused("trailing-slash")),
    ("//a", Refused("empty-segment")),
    ("/a/..", Refused("dot-segment")),
    ("/a b", Refused("path-chars")),
]


@pytest.mark.parametrize(("path", "expected"), PATH_CASES)
def test_validate_path_and_spiffe_id_constructor(path: str, expected: str | Refused) -> None:
    if isinstance(expected, Refused):
        assert_refused(refused(lambda: validate_path(path)), expected.rule, path)
        assert_refused(refused(lambda: SpiffeId("td", path)), expected.rule, path)
    else:
        assert validate_path(path) == expected
        assert SpiffeId("td", path).path == expected


WORKLOAD_CASES: Final[list[tuple[str, str | Refused]]] = [
    ("api-gateway", "api-gateway"),
    ("team/api", "team/api"),
    ("a/b/c", "a/b/c"),
    ("...", "..."),
    ("", Refused("empty-segment")),  # as go's FromSegments(td, "")
    ("/", Refused("empty-segment")),
    ("/api", Refused("empty-segment")),
    ("a//b", Refused("empty-segment")),
    ("api/", Refused("trailing-slash")),
    ("./a", Refused("dot-segment")),
    ("a/..", Refused("dot-segment")),
    ("a/$", Refused("path-chars")),
    ("api gateway", Refused("path-chars")),
    ("api-gat\u00e9way", Refused("path-chars")),
]


@pytest.mark.parametrize(("path", "expected"), WORKLOAD_CASES)
def test_validate_workload_path(path: str, expected: str | Refused) -> None:
    if isinstance(expected, Refused):
        error = refused(lambda: validate_workload_path(path))
        assert_refused(error, expected.rule, path)
    else:
        assert validate_workload_path(path) == expected


def test_workload_path_with_leading_slash_gets_a_hint() -> None:
    error = refused(lambda: validate_workload_path("/api"))
    assert str(error) == (
        f"workload path '/api' is invalid: {GO['empty-segment']} (write it without a leading slash)"
    )


# -- korium's SPIFFE IDs ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("workload", "expected"),
    [
        (None, f"spiffe://{TD}/{HEX}"),
        ("api-gateway", f"spiffe://{TD}/{HEX}/api-gateway"),
        ("team/api", f"spiffe://{TD}/{HEX}/team/api"),
    ],
)
def test_korium_ids_round_trip(workload: str | None, expected: str) -> None:
    spiffe_id = korium_spiffe_id(TD, KEY, workload)
    assert spiffe_id == expected
    assert validate_spiffe_id(spiffe_id, TD) == KEY
    assert identity_of(parse_spiffe_id(spiffe_id)) == KEY


@pytest.mark.parametrize(
    ("trust_domain", "workload", "rule"),
    [
        ("Prod.example.com", None, "trust-domain-chars"),
        ("", None, "trust-domain-missing"),
        (TD, "", "empty-segment"),
        (TD, "/api", "empty-segment"),
        (TD, "api/", "trailing-slash"),
        (TD, "a/../b", "dot-segment"),
        (TD, "a:b", "path-chars"),
    ],
)
def test_korium_spiffe_id_refuses_bad_parts(
    trust_domain: str, workload: str | None, rule: str
) -> None:
    error = refused(lambda: korium_spiffe_id(trust_domain, KEY, workload))
    assert_refused(error, rule, trust_domain if workload is None else workload)


def test_korium_spiffe_id_takes_an_identity_not_text() -> None:
    with pytest.raises(TypeError, match="identity must be an Identity, got str"):
        korium_spiffe_id(TD, HEX, None)  # type: ignore[arg-type]


def test_lowercase_hex_stays_lowercase() -> None:
    assert HEX.upper() != HEX  # the fixture key has letters to get wrong
    assert korium_spiffe_id(TD, KEY).removeprefix(f"spiffe://{TD}/") == HEX


VALIDATE_CASES: Final[list[tuple[str, str, str]]] = [
    # (SPIFFE ID, rule, words the message must contain)
    (f"spiffe://{TD}/{HEX.upper()}", "identity-format", "lowercase hex, but has uppercase"),
    (f"spiffe://{TD}/{HEX[:-1]}F", "identity-format", "lowercase hex, but has uppercase"),
    (f"spiffe://{TD}/{HEX[:63]}", "identity-format", "64 lowercase hex characters, got 63"),
    (f"spiffe://{TD}/{HEX}0", "identity-format", "64 lowercase hex characters, got 65"),
    (f"spiffe://{TD}/", "trailing-slash", GO["trailing-slash"]),
    (f"spiffe://{TD}/g{HEX[1:]}", "identity-format", "(0-9, a-f), got other characters"),
    (f"spiffe://{TD}/{'z' * 64}", "identity-format", "(0-9, a-f), got other characters"),
    (f"spiffe://{TD}/api-gateway/{HEX}", "identity-format", "got 11"),
    (f"spiffe://{TD}", "identity-missing", "spiffe://<trust domain>/<identity hex>"),
    (f"spiffe://{TD}/{'00' * 32}", "identity-invalid", "(all-zero)"),
    (f"spiffe://{TD}/{'ff' * 32}", "identity-invalid", "(all-ones)"),
    (f"spiffe://{TD}/01{'00' * 31}", "identity-invalid", "(small-order)"),
    (f"spiffe://{TD}/02{'00' * 31}", "identity-invalid", "(not-a-point)"),
    (f"spiffe://{TD}/{'ff' * 31}7f", "identity-invalid", "(not-a-point)"),
    (f"spiffe://other.example.com/{HEX}", "trust-domain-mismatch", "'other.example.com'"),
    (f"spiffe://example.com/{HEX}", "trust-domain-mismatch", "expected 'prod.example.com'"),
    (f"spiffe://{TD}./{HEX}", "trust-domain-mismatch", f"'{TD}.'"),
    (f"spiffe://{TD}/{HEX}/", "trailing-slash", GO["trailing-slash"]),
    (f"spiffe://{TD}/{HEX}/a b", "path-chars", GO["path-chars"]),
    (f"spiffe://{TD}/{HEX}/./api", "dot-segment", GO["dot-segment"]),
    (f"SPIFFE://{TD}/{HEX}", "scheme", GO["scheme"]),
    (f"spiffe://{TD}/%{HEX[2:]}", "path-chars", GO["path-chars"]),
]


@pytest.mark.parametrize(("spiffe_id", "rule", "words"), VALIDATE_CASES)
def test_validate_spiffe_id_refuses(spiffe_id: str, rule: str, words: str) -> None:
    error = refused(lambda: validate_spiffe_id(spiffe_id, TD))
    assert_refused(error, rule, spiffe_id)
    assert words in str(error)


def test_uppercase_identity_message() -> None:
    spiffe_id = f"spiffe://{TD}/{HEX.upper()}"
    error = refused(lambda: validate_spiffe_id(spiffe_id, TD))
    assert str(error) == (
        f"SPIFFE ID {spiffe_id!r} has a malformed identity {HEX.upper()!r}: "
        "it must be written in lowercase hex, but has uppercase letters"
    )


def test_invalid_key_keeps_the_identity_error_as_cause() -> None:
    spiffe_id = f"spiffe://{TD}/{'00' * 32}"
    error = refused(lambda: validate_spiffe_id(spiffe_id, TD))
    assert str(error) == (
        f"SPIFFE ID {spiffe_id!r} names an invalid Ed25519 identity (all-zero): "
        "the all-zero key is not a valid identity"
    )
    assert isinstance(error.__cause__, InvalidIdentityError)
    assert error.__cause__.reason == "all-zero"


def test_validate_spiffe_id_checks_the_expected_trust_domain() -> None:
    spiffe_id = korium_spiffe_id(TD, KEY)
    error = refused(lambda: validate_spiffe_id(spiffe_id, "Prod.example.com"))
    assert_refused(error, "trust-domain-chars", "Prod.example.com")


def test_identity_of_ignores_the_trust_domain() -> None:
    assert identity_of(SpiffeId("any.domain", f"/{HEX}/w")) == KEY
    error = refused(lambda: identity_of(SpiffeId("any.domain")))
    assert_refused(error, "identity-missing", "spiffe://any.domain")


# -- properties ---------------------------------------------------------------------------------

# An independent statement of go-spiffe's grammar, to compare the parser against.
GRAMMAR: Final = re.compile(r"spiffe://[a-z0-9._-]+(?:/(?!\.\.?(?:/|\Z))[A-Za-z0-9._-]+)*")
ALL_RULES: Final = set(GO) | KORIUM_RULES
NEAR_MISS: Final = st.builds(
    lambda prefix, rest: prefix + rest,
    st.sampled_from(["spiffe://", "spiffe:/", "Spiffe://", "", "spiffe://td/"]),
    st.text(alphabet="aZ09._-/$%:@ \n\u00e9\u212a", max_size=40),
)


@settings(max_examples=1000, deadline=None)
@given(st.one_of(st.text(), NEAR_MISS))
@example("spiffe://a/.")
@example("spiffe://a/..b/")
@example("spiffe://a\n")
def test_parse_returns_an_id_or_raises_spiffe_id_error(text: str) -> None:
    # Any exception other than SpiffeIdError escapes pytest.raises and fails the test.
    if GRAMMAR.fullmatch(text):
        assert str(parse_spiffe_id(text)) == text
        return
    with pytest.raises(SpiffeIdError) as info:
        parse_spiffe_id(text)
    assert info.value.rule in GO
    assert GO[info.value.rule] in str(info.value)
    if len(text) <= 300:
        assert repr(text) in str(info.value)


TD_NAMES: Final = st.text(alphabet=TD_CHARS, min_size=1, max_size=20)
SEGMENT_NAMES: Final = st.text(alphabet=PATH_CHARS, min_size=1, max_size=10).filter(
    lambda segment: segment not in (".", "..")
)


@settings(max_examples=300, deadline=None)
@given(TD_NAMES, st.lists(SEGMENT_NAMES, max_size=5))
def test_every_grammatical_id_parses(trust_domain: str, segments: list[str]) -> None:
    text = f"spiffe://{trust_domain}" + "".join(f"/{segment}" for segment in segments)
    parsed = parse_spiffe_id(text)
    assert parsed == SpiffeId.from_segments(trust_domain, *segments)
    assert parsed.segments == tuple(segments)
    assert str(parsed) == text


@settings(max_examples=200, deadline=None)
@given(
    st.binary(min_size=32, max_size=32),
    TD_NAMES,
    st.none() | st.lists(SEGMENT_NAMES, min_size=1, max_size=4).map("/".join),
)
def test_korium_round_trip(seed: bytes, trust_domain: str, workload: str | None) -> None:
    identity: Identity = Keypair.from_seed(seed).identity
    spiffe_id = korium_spiffe_id(trust_domain, identity, workload)
    assert validate_spiffe_id(spiffe_id, trust_domain) == identity
    tail = "" if workload is None else f"/{workload}"
    assert spiffe_id == f"spiffe://{trust_domain}/{identity.hex()}{tail}"
