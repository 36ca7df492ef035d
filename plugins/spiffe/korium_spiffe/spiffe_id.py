"""SPIFFE IDs: go-spiffe's strict parser, and korium's ``spiffe://{td}/{identity_hex}[/{path}]``.

Parsing follows go-spiffe v2's strict ``spiffeid`` package rule for rule and in the same order,
so an ID korium accepts is one every SPIFFE implementation accepts: exactly ``spiffe://``, a trust
domain of ``[a-z0-9._-]``, path segments of ``[A-Za-z0-9._-]``, no empty, dot or trailing
segments, no percent-encoding, nothing outside ASCII. korium then binds the ID to a key: the
first segment is the node's Ed25519 identity as 64 lowercase hex digits, so a peer's SPIFFE ID
can only name the key its TLS handshake proved. Pure functions, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

from korium.errors import InvalidIdentityError, KoriumError
from korium.identity import Identity

SCHEME: Final = "spiffe://"

SpiffeIdRule = Literal[
    "empty",
    "scheme",
    "trust-domain-missing",
    "trust-domain-chars",
    "leading-slash",
    "path-chars",
    "dot-segment",
    "trailing-slash",
    "empty-segment",
    "trust-domain-mismatch",
    "identity-missing",
    "identity-format",
    "identity-invalid",
]

# go-spiffe's error strings (spiffeid/errors.go), verbatim, so logs match across implementations.
GO_SPIFFE_MESSAGES: Final[Mapping[SpiffeIdRule, str]] = {
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

# Explicit ASCII ranges: str.isalnum, str.islower or \d would let Unicode letters and digits in.
_BAD_TRUST_DOMAIN_CHAR: Final = re.compile(r"[^a-z0-9._-]")
_BAD_PATH_CHAR: Final = re.compile(r"[^A-Za-z0-9._-]")
_LOWER_HEX_64: Final = re.compile(r"[0-9a-f]{64}")
_ANY_HEX_64: Final = re.compile(r"[0-9a-fA-F]{64}")
_SHOWN_CHARS: Final = 300  # a korium ID with a workload path is over 100
_KORIUM_FORMAT: Final = "spiffe://<trust domain>/<identity hex>[/<workload path>]"


class SpiffeIdError(KoriumError, ValueError):
    """A SPIFFE ID, trust domain or path breaks a rule; ``rule`` is a short stable code for it.

    For the SPIFFE syntax rules the message contains go-spiffe's error string verbatim.
    """

    def __init__(self, rule: SpiffeIdRule, message: str) -> None:
        super().__init__(message)
        self.rule: SpiffeIdRule = rule


def _show(text: str) -> str:
    """The input for a message: quoted, control characters escaped, long input cut short."""
    if len(text) <= _SHOWN_CHARS:
        return repr(text)
    return f"{text[:_SHOWN_CHARS]!r}... ({len(text)} characters)"


def _syntax_error(what: str, text: str, rule: SpiffeIdRule, hint: str = "") -> SpiffeIdError:
    return SpiffeIdError(rule, f"{what} {_show(text)} is invalid: {GO_SPIFFE_MESSAGES[rule]}{hint}")


# -- go-spiffe's strict rules -------------------------------------------------------------------


def _trust_domain_problem(name: str) -> SpiffeIdRule | None:
    """go's TrustDomainFromString for a bare name: missing, or a character out of range."""
    if not name:
        return "trust-domain-missing"
    if _BAD_TRUST_DOMAIN_CHAR.search(name):
        return "trust-domain-chars"
    return None


def _path_problem(path: str) -> SpiffeIdRule | None:
    """go's ValidatePath, reporting the first problem in go's left-to-right scan order."""
    if not path:
        return None
    if path[0] != "/":
        return "leading-slash"
    segments = path[1:].split("/")
    for index, segment in enumerate(segments):
        if _BAD_PATH_CHAR.search(segment):
            return "path-chars"
        last = index == len(segments) - 1
        if not segment:
            return "trailing-slash" if last else "empty-segment"
        if segment in (".", ".."):
            return "dot-segment"
    return None


def _segment_problem(segment: str) -> SpiffeIdRule | None:
    """go's ValidatePathSegment: empty and dot segments first, then characters."""
    if not segment:
        return "empty-segment"
    if segment in (".", ".."):
        return "dot-segment"
    if _BAD_PATH_CHAR.search(segment):
        return "path-chars"
    return None


def validate_trust_domain(name: str) -> str:
    """Return *name* if it is a valid trust domain name (not an ID); raise SpiffeIdError if not."""
    rule = _trust_domain_problem(name)
    if rule is None:
        return name
    hint = " (give the bare name, without spiffe://)" if "://" in name else ""
    raise _syntax_error("trust domain", name, rule, hint)


def validate_path(path: str) -> str:
    """Return *path* if it is a valid ID path, "" or "/seg[/seg...]" (go's ValidatePath)."""
    rule = _path_problem(path)
    if rule is None:
        return path
    raise _syntax_error("path", path, rule)


def validate_path_segment(segment: str) -> str:
    """Return *segment* if it is one valid path segment, as go's ValidatePathSegment."""
    rule = _segment_problem(segment)
    if rule is None:
        return segment
    raise _syntax_error("path segment", segment, rule)


def validate_workload_path(path: str) -> str:
    """Return workload path *path* ("seg[/seg...]", no outer slashes) if its segments are valid.

    It is checked as the tail of a SPIFFE ID path, so "" is one empty segment (as go's
    FromSegments(td, "")) and a leading slash makes an empty segment.
    """
    if not path:
        raise _syntax_error("workload path", path, "empty-segment", " (give at least one segment)")
    rule = _path_problem("/" + path)
    if rule is None:
        return path
    hint = " (write it without a leading slash)" if path.startswith("/") else ""
    raise _syntax_error("workload path", path, rule, hint)


@dataclass(frozen=True, slots=True)
class SpiffeId:
    """A SPIFFE ID that obeys go-spiffe's strict rules; construction checks both fields.

    ``path`` is "" or starts with "/"; ``str()`` gives the canonical ``spiffe://`` form.
    """

    trust_domain: str
    path: str = ""

    def __post_init__(self) -> None:
        validate_trust_domain(self.trust_domain)
        validate_path(self.path)

    @classmethod
    def from_segments(cls, trust_domain: str, *segments: str) -> SpiffeId:
        """The ID with these path segments (none: no path), as go's FromSegments."""
        for segment in segments:
            validate_path_segment(segment)
        return cls(trust_domain, "".join("/" + segment for segment in segments))

    @property
    def segments(self) -> tuple[str, ...]:
        """The path's segments, in order; () when the ID has no path."""
        return tuple(self.path[1:].split("/")) if self.path else ()

    def __str__(self) -> str:
        return f"{SCHEME}{self.trust_domain}{self.path}"


def parse_spiffe_id(text: str) -> SpiffeId:
    """Parse *text* by go-spiffe's strict FromString rules; SpiffeIdError names the broken one."""
    if not isinstance(text, str):
        raise TypeError(f"a SPIFFE ID is text, got {type(text).__name__}")
    if not text:
        raise _syntax_error("SPIFFE ID", text, "empty")
    if not text.startswith(SCHEME):
        raise _syntax_error("SPIFFE ID", text, "scheme", " (it must start with spiffe://)")
    trust_domain, slash, rest = text[len(SCHEME) :].partition("/")
    # go scans the trust domain's characters before it notices the trust domain is empty.
    rule = _trust_domain_problem(trust_domain) or _path_problem(slash + rest)
    if rule is not None:
        raise _syntax_error("SPIFFE ID", text, rule)
    return SpiffeId(trust_domain, slash + rest)


# -- korium's format -----------------------------------------------------------------------------


def korium_spiffe_id(
    trust_domain: str, identity: Identity, workload_path: str | None = None
) -> str:
    """The SPIFFE ID ``spiffe://{trust_domain}/{identity hex}[/{workload_path}]`` of a node."""
    validate_trust_domain(trust_domain)
    if not isinstance(identity, Identity):
        raise TypeError(f"identity must be an Identity, got {type(identity).__name__}")
    path = "/" + identity.hex()
    if workload_path is not None:
        path += "/" + validate_workload_path(workload_path)
    return f"{SCHEME}{trust_domain}{path}"


def identity_of(spiffe_id: SpiffeId) -> Identity:
    """The Identity named by a korium SPIFFE ID's first path segment (trust domain not checked)."""
    shown = _show(str(spiffe_id))
    segments = spiffe_id.segments
    if not segments:
        raise SpiffeIdError(
            "identity-missing",
            f"SPIFFE ID {shown} names no identity: a korium SPIFFE ID is {_KORIUM_FORMAT}",
        )
    text = segments[0]
    if not _LOWER_HEX_64.fullmatch(text):
        if _ANY_HEX_64.fullmatch(text):
            problem = "it must be written in lowercase hex, but has uppercase letters"
        elif len(text) != 64:
            problem = f"it must be 64 lowercase hex characters, got {len(text)}"
        else:
            problem = "it must be 64 lowercase hex characters (0-9, a-f), got other characters"
        raise SpiffeIdError(
            "identity-format",
            f"SPIFFE ID {shown} has a malformed identity {_show(text)}: {problem}",
        )
    try:
        return Identity.from_hex(text)
    except InvalidIdentityError as err:
        raise SpiffeIdError(
            "identity-invalid",
            f"SPIFFE ID {shown} names an invalid Ed25519 identity ({err.reason}): {err}",
        ) from err


def validate_spiffe_id(spiffe_id: str, trust_domain: str) -> Identity:
    """The Identity a korium SPIFFE ID names, if it parses strictly and is in *trust_domain*.

    The caller still compares the result with the key the peer proved in the handshake.
    """
    validate_trust_domain(trust_domain)
    parsed = parse_spiffe_id(spiffe_id)
    if parsed.trust_domain != trust_domain:
        raise SpiffeIdError(
            "trust-domain-mismatch",
            f"SPIFFE ID {_show(spiffe_id)} is in trust domain {_show(parsed.trust_domain)}, "
            f"expected {_show(trust_domain)}",
        )
    return identity_of(parsed)
