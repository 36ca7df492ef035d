"""The ``spiffe`` plugin's hooks: put the node's SPIFFE ID in its certificate, check peers'.

Settings (``Node.builder().spiffe_trust_domain("example.org").spiffe_workload_path("api")`` or
``plugin_settings("spiffe", ...)``) are the fields of :class:`korium_spiffe.SpiffeSettings`.
Every node with the plugin checks, during the TLS handshake, that a SPIFFE ID a peer presents
names the peer's own key; with ``allowed_peers`` it also admits only those trust domains.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click
from cryptography import x509

from korium import WORKLOAD_IDENTITY, Identity, Node, NodeConfig, NodeIdentity, PluginInfo, hookimpl
from korium.errors import KoriumError
from korium.hookspecs import CertificateExtension
from korium_spiffe.certificates import spiffe_extension, spiffe_ids_of
from korium_spiffe.config import SpiffeConfig, SpiffeSettings
from korium_spiffe.spiffe_id import (
    SpiffeIdError,
    identity_of,
    parse_spiffe_id,
    validate_trust_domain,
    validate_workload_path,
)

NAME = "spiffe"

korium_plugin = PluginInfo(
    name=NAME,
    description="SPIFFE IDs as X.509 URI SANs, bound to the node key and checked in the handshake.",
    provides=(WORKLOAD_IDENTITY,),
)


class SpiffeService:
    """The WorkloadIdentity capability: SPIFFE IDs in this node's trust domain."""

    def __init__(self, settings: SpiffeSettings) -> None:
        self.settings = settings

    def spiffe_id(self, identity: Identity) -> str:
        """``spiffe://{trust_domain}/{identity_hex}[/{workload_path}]`` for *identity*."""
        if self.settings.own is None:
            raise KoriumError("this node has no SPIFFE trust domain: set spiffe_trust_domain")
        return self.settings.own.spiffe_id(identity)

    def check_peer(self, peer: Identity, certificate: x509.Certificate) -> str | None:
        """None to admit *peer*, else why its certificate is refused."""
        ids = spiffe_ids_of(certificate)
        policy = self.settings.policy
        if not ids:
            if policy:
                return "the peer presents no SPIFFE ID, and this node admits only SPIFFE peers"
            return None
        if len(ids) > 1:
            return f"the peer's certificate carries {len(ids)} SPIFFE IDs (an SVID has one)"
        try:
            parsed = parse_spiffe_id(ids[0])
            named = identity_of(parsed)
        except SpiffeIdError as exc:
            return f"the peer's SPIFFE ID is invalid: {exc}"
        if named != peer:
            return f"the peer's SPIFFE ID {ids[0]} names another identity than its key {peer}"
        if policy and not policy.admits(parsed):
            allowed = ", ".join(policy.allowed)
            return f"the peer's SPIFFE ID {ids[0]} is outside the admitted ones ({allowed})"
        return None


def service(node: Node) -> SpiffeService:
    """The SPIFFE service of *node*."""
    return node.services.require_instance(WORKLOAD_IDENTITY, SpiffeService)


@hookimpl
def korium_configure(config: NodeConfig) -> None:
    SpiffeSettings.from_settings(config.settings(NAME))


@hookimpl
def korium_node_setup(node: Node) -> None:
    settings = SpiffeSettings.from_settings(node.config.settings(NAME))
    node.services.provide(WORKLOAD_IDENTITY, SpiffeService(settings), provider=NAME)


@hookimpl
def korium_certificate_extensions(node: Node) -> Sequence[CertificateExtension]:
    own = service(node).settings.own
    if own is None:
        return []
    return [(spiffe_extension(own.spiffe_id(node.identity)), False)]


@hookimpl
def korium_verify_peer_certificate(
    node: Node, peer: Identity, certificate: x509.Certificate
) -> str | None:
    return service(node).check_peer(peer, certificate)


@hookimpl
def korium_cli_commands(cli: click.Group) -> None:
    """``korium identity show --spiffe-trust-domain TD [--spiffe-workload-path P]``."""
    group = cli.commands.get("identity")
    show = group.commands.get("show") if isinstance(group, click.Group) else None
    if show is None or show.callback is None:
        return
    if any(param.name == "spiffe_trust_domain" for param in show.params):
        return  # added already (the CLI was built twice in this process)
    show.params.extend(
        [
            click.Option(
                ["--spiffe-trust-domain"],
                envvar="KORIUM_SPIFFE_TRUST_DOMAIN",
                help="Also show this identity's SPIFFE ID in this trust domain.",
            ),
            click.Option(
                ["--spiffe-workload-path"],
                envvar="KORIUM_SPIFFE_WORKLOAD_PATH",
                help="Workload path of the SPIFFE ID (e.g. api or team/api).",
            ),
        ]
    )
    original = show.callback

    def show_with_spiffe(
        spiffe_trust_domain: str | None, spiffe_workload_path: str | None, **options: Any
    ) -> None:
        config = None
        if spiffe_workload_path is not None and spiffe_trust_domain is None:
            raise click.UsageError("--spiffe-workload-path needs --spiffe-trust-domain")
        if spiffe_trust_domain is not None:  # checked before anything is printed
            for value, check, hint in (
                (spiffe_trust_domain, validate_trust_domain, "--spiffe-trust-domain"),
                (spiffe_workload_path, validate_workload_path, "--spiffe-workload-path"),
            ):
                try:
                    if value is not None:
                        check(value)
                except SpiffeIdError as exc:
                    raise click.BadParameter(str(exc), param_hint=hint) from None
            config = SpiffeConfig(spiffe_trust_domain, spiffe_workload_path)
        original(**options)
        if config is not None:
            node_identity = NodeIdentity.load(options["key_file"], difficulty=options["difficulty"])
            click.echo(f"spiffe    {config.spiffe_id(node_identity.identity)}")

    show.callback = show_with_spiffe
