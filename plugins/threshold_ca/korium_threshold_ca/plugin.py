"""The ``threshold_ca`` plugin's hooks: one :class:`ThresholdCaService` per node, the CLI.

Every node with the plugin can request certificates from a threshold CA over the mesh
(``node.request_ca_certificate_from_mesh``); a node built with
``Node.builder().as_ca_signer(signer_state)`` also signs for it. Settings are the fields of
:class:`korium_threshold_ca.ThresholdCaSettings`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import click

from korium import CERTIFICATE_ISSUER, PUBSUB, Node, NodeConfig, PluginInfo, hookimpl
from korium_threshold_ca.config import ThresholdCaSettings
from korium_threshold_ca.service import ThresholdCaService

NAME = "threshold_ca"

korium_plugin = PluginInfo(
    name=NAME,
    description="FROST (RFC 9591) threshold CA issuing SPIFFE certificates over the mesh.",
    provides=(CERTIFICATE_ISSUER,),
    requires=(PUBSUB,),
)


def service(node: Node) -> ThresholdCaService:
    """The threshold CA service of *node* (``run_dkg``, requests, signer statistics)."""
    return node.services.require_instance(CERTIFICATE_ISSUER, ThresholdCaService)


@hookimpl
def korium_configure(config: NodeConfig) -> None:
    ThresholdCaSettings.from_settings(config.settings(NAME))


@hookimpl
def korium_node_setup(node: Node) -> None:
    settings = ThresholdCaSettings.from_settings(node.config.settings(NAME))
    node.services.provide(CERTIFICATE_ISSUER, ThresholdCaService(node, settings), provider=NAME)


@hookimpl(trylast=True)
def korium_node_started(node: Node) -> Awaitable[None]:
    return asyncio.ensure_future(service(node).start())


@hookimpl
def korium_node_stopping(node: Node) -> Awaitable[None]:
    return asyncio.ensure_future(service(node).stop())


@hookimpl
def korium_stats(node: Node) -> dict[str, int | float]:
    return service(node).stats()


@hookimpl
def korium_cli_commands(cli: click.Group) -> None:
    from korium_threshold_ca.cli import ca

    cli.add_command(ca)
