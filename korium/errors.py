"""One hierarchy for every error korium raises.

Everything that can go wrong at run time (bad input from peers or files, the network, the
environment) raises a :class:`KoriumError`, so an application can catch one type. Calling an
API with arguments of the wrong type or range is a programming error and raises ``TypeError`` or
``ValueError`` as usual. Messages say what went wrong and what to do about it.
"""

from __future__ import annotations


class KoriumError(Exception):
    """Base class of every korium error."""


class ConfigError(KoriumError, ValueError):
    """A configuration value is out of range or inconsistent."""


# -- identity ---------------------------------------------------------------------------------


class IdentityError(KoriumError):
    """Base class for key, identity and signature problems."""


class InvalidIdentityError(IdentityError, ValueError):
    """Bytes or text that are not a usable Ed25519 identity.

    ``reason`` is one of ``"length"``, ``"hex"``, ``"all-zero"``, ``"all-ones"``,
    ``"not-a-point"``, ``"small-order"``, ``"not-in-subgroup"``.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class SignatureError(IdentityError):
    """A signature is missing, malformed or does not verify."""


# -- proof of work ----------------------------------------------------------------------------


class ProofOfWorkError(KoriumError):
    """Base class for proof-of-work problems."""


class InsufficientProofOfWorkError(ProofOfWorkError):
    """A proof does not reach the difficulty this node requires."""

    def __init__(self, message: str, *, strength: int, required: int) -> None:
        super().__init__(message)
        self.strength = strength
        self.required = required


class ProofOfWorkCancelledError(ProofOfWorkError):
    """Proof-of-work generation was cancelled before a solution was found."""

    def __init__(self, message: str, *, hashes: int) -> None:
        super().__init__(message)
        self.hashes = hashes


# -- contact records --------------------------------------------------------------------------


class ContactError(KoriumError):
    """Base class for every reason a contact record is refused."""


class ContactDecodeError(ContactError):
    """The bytes are not MessagePack of a contact record (truncated, not UTF-8, too large)."""


class ContactStructureError(ContactError, ValueError):
    """The record breaks a structural rule (field types, address count or size, lengths)."""


class ContactSignatureError(ContactError):
    """The record's signature does not verify for its identity: it was forged or altered."""


class ContactFromFutureError(ContactError):
    """The record's timestamp lies further in the future than the allowed clock skew."""

    def __init__(self, message: str, *, drift_ms: int) -> None:
        super().__init__(message)
        self.drift_ms = drift_ms


class ContactStaleError(ContactError):
    """The record is older than the accepted maximum age."""

    def __init__(self, message: str, *, age_ms: int) -> None:
        super().__init__(message)
        self.age_ms = age_ms


class ContactProofError(ContactError):
    """The record's proof of work is missing or too weak for its identity."""


# -- key files --------------------------------------------------------------------------------


class KeyFileError(KoriumError):
    """Base class for problems reading or writing a node key file."""

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message)
        self.path = path


class KeyFileNotFoundError(KeyFileError):
    """The key file does not exist."""


class KeyFileExistsError(KeyFileError):
    """Refusing to overwrite an existing key file."""


class KeyFilePermissionError(KeyFileError):
    """The key file is readable or writable by other users, or cannot be read."""


class KeyFileCorruptError(KeyFileError):
    """The key file is not a korium key file (bad PEM, bad header, inconsistent fields)."""


class KeyFileKeyTypeError(KeyFileError):
    """The key file holds a private key that is not Ed25519."""


class KeyFileProofError(KeyFileError):
    """The key file's proof of work is missing, wrong or too weak for this node."""


# -- plugins ----------------------------------------------------------------------------------


class PluginError(KoriumError):
    """Base class for plugin loading and composition problems."""


class PluginLoadError(PluginError):
    """A plugin could not be found, imported or registered."""


class PluginConflictError(PluginError):
    """Two plugins in one node profile provide the same capability or share a name."""


class CapabilityMissing(PluginError):
    """No plugin in this node's profile provides a capability that is needed.

    ``capability`` is the capability's name, ``extra`` the ``korium[...]`` extra that
    installs a plugin providing it (``None`` if korium ships none).
    """

    def __init__(self, capability: str, *, needed_by: str | None, extra: str | None) -> None:
        who = f"{needed_by} needs" if needed_by else "this operation needs"
        if extra:
            hint = f"install korium[{extra}] or add a plugin that provides it to the node profile"
        else:
            hint = "install and enable a plugin that provides it"
        super().__init__(f"{who} a {capability} capability: {hint}")
        self.capability = capability
        self.needed_by = needed_by
        self.extra = extra


# -- transport and rpc ------------------------------------------------------------------------


class TransportError(KoriumError):
    """The node's socket or transport failed (bind error, node closed)."""


class RpcError(KoriumError):
    """Base class for every way a request to a peer can fail."""


class RpcTimeoutError(RpcError, TimeoutError):
    """No response within the request's timeout. The peer may still have handled it."""


class PeerUnreachableError(RpcError):
    """No connection to the peer could be established (no address, no answer, refused)."""


class IdentityMismatchError(PeerUnreachableError):
    """The peer at the address is not the identity we dialled, or refused ours.

    Raised during the handshake: no request was sent.
    """


class ProtocolNotSupportedError(RpcError):
    """The peer has no handler for the requested protocol (its plugin is not installed)."""


class RemoteError(RpcError):
    """The peer's handler failed; ``message`` is the peer's description, ``code`` its kind."""

    def __init__(self, message: str, *, code: int) -> None:
        super().__init__(message)
        self.code = code


class RequestTooLargeError(RpcError):
    """The request exceeds the size limit; it was not sent (or the peer refused it)."""


class ResponseTooLargeError(RpcError):
    """The peer's response exceeds the size limit; it was discarded unread."""


class ConnectionLostError(RpcError):
    """The connection closed while the request was in flight; it may or may not have run."""
