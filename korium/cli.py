"""The ``korium`` command: identities, installed plugins, and plugin subcommands."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

import korium
from korium.errors import KoriumError, ProofOfWorkCancelledError
from korium.identity import DEFAULT_DIFFICULTY, NodeIdentity, PowProgress
from korium.identity.keys import Identity, Keypair
from korium.identity.pow import solve_pow
from korium.node import Node
from korium.plugins import inspect_installed, installed_plugin_objects, new_plugin_manager
from korium.transport.addresses import format_address, parse_address

F = TypeVar("F", bound=Callable[..., Any])
console = Console(stderr=True)
out = Console()


def default_key_file() -> Path:
    """``$KORIUM_KEY_FILE``, else ``$XDG_CONFIG_HOME/korium/identity.pem``."""
    if env := os.environ.get("KORIUM_KEY_FILE"):
        return Path(env)
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "korium" / "identity.pem"


key_file_option = click.option(
    "--key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=default_key_file,
    show_default="$KORIUM_KEY_FILE or ~/.config/korium/identity.pem",
    help="Node key file.",
)


def difficulty_option(help_text: str) -> Callable[[F], F]:
    return click.option(
        "--difficulty",
        type=click.IntRange(0, 64),
        default=DEFAULT_DIFFICULTY,
        show_default=True,
        help=help_text,
    )


@click.group()
@click.version_option(korium.__version__, prog_name="korium")
def cli() -> None:
    """korium: a peer-to-peer networking fabric."""


@cli.command("plugins")
def plugins_command() -> None:
    """List installed plugins: versions, capabilities and hooks."""
    reports = inspect_installed()
    if not reports:
        out.print("No plugins installed. Install some with: pip install 'korium\\[all]'")
        return
    for report in reports:
        source = f" ({report.distribution})" if report.distribution else ""
        out.print(f"[bold]{report.name}[/bold] {report.version or '?'}{source}", highlight=False)
        if report.info is None:
            out.print(f"  [red]error[/red]     {escape(report.error or '')}")
            continue
        if report.info.description:
            out.print(f"  {escape(report.info.description)}")
        rows = {
            "provides": ", ".join(c.name for c in report.info.provides),
            "requires": ", ".join(c.name for c in report.info.requires),
            "replaces": ", ".join(report.info.replaces),
            "hooks": ", ".join(h.removeprefix("korium_") for h in report.hooks),
        }
        for label, value in rows.items():
            out.print(f"  {label:<9} {escape(value) or '-'}", highlight=False)


@cli.group("identity")
def identity_group() -> None:
    """Create and inspect node identities (key + proof of work)."""


@identity_group.command("new")
@key_file_option
@difficulty_option("Proof-of-work bits.")
@click.option(
    "--workers",
    type=click.IntRange(1),
    default=None,
    help="Processes to search with [default: every core].",
)
@click.option("--force", is_flag=True, help="Overwrite an existing key file.")
def identity_new(key_file: Path, difficulty: int, workers: int | None, force: bool) -> None:
    """Generate a keypair and its proof of work, and save them to KEY_FILE (mode 0600)."""
    if key_file.exists() and not force:
        raise click.ClickException(
            f"{key_file} already exists; use --force to replace it (the old identity is lost)"
        )
    keypair = Keypair.generate()
    expected = 2**difficulty
    columns = (
        SpinnerColumn(),
        TextColumn(f"PoW {difficulty} bits"),
        BarColumn(bar_width=20),
        TextColumn("{task.fields[done]} / ~{task.fields[expected]} hashes"),
        TextColumn("{task.fields[rate]}"),
        TextColumn("{task.fields[eta]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as bar:
        task = bar.add_task(
            "pow", total=expected, done="0", expected=_si(expected), rate="", eta=""
        )

        def show(snapshot: PowProgress) -> None:
            remaining = snapshot.expected_remaining
            bar.update(
                task,
                completed=snapshot.hashes,
                total=max(expected, snapshot.hashes),
                done=_si(snapshot.hashes),
                rate=f"{_si(snapshot.rate)}H/s x{snapshot.workers}",
                eta=f"mean total ~{remaining:.1f}s" if remaining is not None else "",
            )

        try:
            proof = solve_pow(keypair.identity, difficulty, workers=workers, progress=show)
        except (KeyboardInterrupt, ProofOfWorkCancelledError):
            console.print("[yellow]cancelled[/yellow]: no key file written")
            sys.exit(130)
    node_identity = NodeIdentity(keypair, proof)
    try:
        path = node_identity.save(key_file, overwrite=force)
    except KoriumError as exc:
        raise click.ClickException(str(exc)) from None
    out.print(f"identity  {node_identity.identity}")
    out.print(f"strength  {node_identity.strength} bits (required {difficulty})")
    out.print(f"key file  {path}")


@identity_group.command("show")
@key_file_option
@click.option(
    "--difficulty",
    type=click.IntRange(0, 64),
    default=0,
    show_default=True,
    help="Refuse the file unless its proof reaches this many bits.",
)
def identity_show(key_file: Path, difficulty: int) -> None:
    """Show the identity stored in KEY_FILE and the strength of its proof of work."""
    try:
        node_identity = NodeIdentity.load(key_file, difficulty=difficulty)
    except KoriumError as exc:
        raise click.ClickException(str(exc)) from None
    out.print(f"identity  {node_identity.identity}")
    out.print(f"strength  {node_identity.strength} bits (spec default {DEFAULT_DIFFICULTY})")
    out.print(f"pow nonce {node_identity.proof.nonce}")
    out.print(f"key file  {key_file}")


@cli.command("run")
@click.option(
    "--bind",
    "bind",
    default="0.0.0.0:0",
    show_default=True,
    help="UDP address to listen on (HOST:PORT, IPv6 as [HOST]:PORT).",
)
@click.option(
    "--bootstrap",
    "bootstraps",
    multiple=True,
    metavar="HOST:PORT/IDENTITY",
    help="A peer to join through (repeatable); another node prints its string.",
)
@key_file_option
@difficulty_option("Proof-of-work bits for this node and its peers.")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def run_command(
    bind: str, bootstraps: tuple[str, ...], key_file: Path, difficulty: int, verbose: bool
) -> None:
    """Run a node until Ctrl-C: print its bootstrap string, log peers as they come and go."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not verbose:
        logging.getLogger("quic").setLevel(logging.WARNING)  # aioquic's per-connection chatter
    try:
        targets = [_parse_bootstrap(text) for text in bootstraps]
        asyncio.run(_run_node(bind, targets, key_file, difficulty))
    except KoriumError as exc:
        raise click.ClickException(str(exc)) from None


def _parse_bootstrap(text: str) -> tuple[Identity, str]:
    address, sep, identity = text.rpartition("/")
    if not sep:
        raise click.BadParameter(f"{text!r} is not HOST:PORT/IDENTITY", param_hint="--bootstrap")
    try:
        parse_address(address)
        return Identity.from_hex(identity), address
    except ValueError as exc:
        raise click.BadParameter(f"{text!r}: {exc}", param_hint="--bootstrap") from None


async def _run_node(
    bind: str, bootstraps: list[tuple[Identity, str]], key_file: Path, difficulty: int
) -> None:
    node = await Node.builder(bind).key_file(key_file).difficulty(difficulty).build()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        # plain echo, not rich: these lines are read by scripts and must never wrap
        click.echo(f"identity  {node.identity}")
        click.echo(f"listening {format_address(node.local_addr)}")
        click.echo(f"bootstrap {node.bootstrap_string()}")
        sys.stdout.flush()
        for peer, address in bootstraps:
            try:
                await node.bootstrap(peer, address)
                logging.getLogger("korium").info("bootstrapped via %s/%s", address, peer)
            except KoriumError as exc:
                logging.getLogger("korium").warning("bootstrap via %s failed: %s", address, exc)
        await stop.wait()
    finally:
        await node.close()
        click.echo("stopped")


def _si(value: float) -> str:
    """1234567 -> '1.2M': compact counts for the progress line."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.1f}{unit}"
    return f"{value:.0f}"


def _add_plugin_commands() -> None:
    pm = new_plugin_manager()
    for plugin in installed_plugin_objects():
        try:
            pm.register(plugin)
        except ValueError:
            continue  # the same module installed twice under two names
    pm.hook.korium_cli_commands(cli=cli)


def main() -> None:
    """Entry point of the ``korium`` command."""
    _add_plugin_commands()
    cli()
