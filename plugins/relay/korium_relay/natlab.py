"""A NAT lab: real Linux NAT routers in network namespaces, for testing applications behind NAT.

Hole punching and relays can only be proven against real NATs: a simulated NAT only tests the
simulation. :class:`NatLab` builds a small, closed internet on one Linux machine out of network
namespaces, veth pairs, bridges and nftables, and lets a test run real processes (korium nodes,
or plain Python scripts) on each host::

    from korium_relay.natlab import NatKind, NatLab, unavailable_reason

    @pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason()))
    async def test_behind_nat() -> None:
        with NatLab() as lab:
            relay = lab.public_host("relay")                   # 203.0.113.x, on the internet
            home = lab.nat("home", NatKind.EIM)                # a home router
            alice = lab.private_host("alice", home)            # 10.N.0.x behind it
            process = await alice.run(sys.executable, "-c", SCRIPT)

Topology and invariants:

* One ``internet`` namespace holds a bridge ``br0`` (the internet's 203.0.113.0/24 segment) and
  is its gateway, 203.0.113.1, routing to the open LANs of :attr:`NatKind.NONE` routers. Public
  hosts and routers' ``wan`` interfaces are veths into that bridge; everything on the internet
  routes by default through the gateway.
* A router namespace has a ``wan`` veth and a ``lan`` bridge; its private hosts hang off the
  bridge and route by default through the router. A NAT router masquerades on ``wan`` with
  nftables; an endpoint-independent one keeps one external port per internal socket, a
  symmetric one (``random,fully-random``) picks a new port per destination. Both drop
  unsolicited inbound traffic on ``wan`` (``ct state new drop``), as home routers do; without
  that rule a peer's early punch packet leaves a conntrack entry that makes the NAT change the
  external port and hole punching fails even between endpoint-independent NATs (see the lab
  notes). Filtering is therefore address-and-port-dependent for both kinds.
* The lab is closed: nothing is ever created in the root namespace (every veth is created
  directly between two lab namespaces), so no packet can leave it. Namespace names start with a
  unique per-lab prefix, so parallel or crashed runs never collide. :meth:`NatLab.close` (also
  run by ``with``, ``async with`` and ``atexit``) kills every process left in the lab's
  namespaces and deletes them; it is idempotent and copes with a partly built lab.

Needs Linux, root, ``ip`` (iproute2) and ``nft`` (nftables); :func:`unavailable_reason` says
why the lab cannot run here, cheaply enough for a ``skipif``. Building a lab runs short blocking
commands (a few milliseconds each); an async test may call the builders directly.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import enum
import functools
import ipaddress
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from typing import Any, Self

from korium.errors import KoriumError

__all__ = [
    "Host",
    "LabUnavailable",
    "NatKind",
    "NatLab",
    "NatLabError",
    "Router",
    "unavailable_reason",
]

COMMAND_TIMEOUT = 10.0
"""Seconds one ``ip`` or ``nft`` command may take before the lab gives up."""

INTERNET = ipaddress.IPv4Network("203.0.113.0/24")
"""The lab's internet segment (RFC 5737 documentation range)."""

INTERNET_GATEWAY = INTERNET.network_address + 1
"""The internet namespace's own address: default gateway of everything on the internet."""

OPEN_LANS = ipaddress.IPv4Network("198.51.100.0/24")
"""Routable LANs of :attr:`NatKind.NONE` routers, one /28 each (RFC 5737 documentation range)."""

OPEN_LAN_PREFIX = 28
"""Prefix length of one open LAN: 16 routers of 13 hosts each."""

NAME_PATTERN = re.compile(r"[a-z][a-z0-9-]{0,19}")
"""Host and router names: short, so that namespace names stay readable."""

PREFIX_PATTERN = re.compile(r"[a-z][a-z0-9]{0,15}")
"""Namespace-name prefixes of labs."""

INTERNET_NAME = "internet"
"""Name of the internet namespace (reserved, cannot name a host)."""


class NatLabError(KoriumError):
    """A lab command failed, or the lab was used wrongly (closed, full, unknown router)."""


class LabUnavailable(NatLabError):
    """The lab cannot run on this machine (not Linux, not root, no ``ip``/``nft``, no netns)."""


class NatKind(enum.Enum):
    """How a router maps and filters traffic between its LAN and the internet (RFC 4787 terms)."""

    EIM = "endpoint-independent"
    """One external port per internal socket, whatever the destination (home routers)."""

    SYMMETRIC = "address-and-port-dependent"
    """A new random external port for every destination (carrier-grade, some firewalls)."""

    NONE = "no NAT"
    """Plain routing, no filtering: the LAN's addresses are public and reachable."""


@dataclass(frozen=True)
class Host:
    """A machine in the lab: one network namespace with one address."""

    name: str
    """The name given to the lab."""
    namespace: str
    """The network namespace it runs in."""
    address: str
    """Its own IPv4 address (what a socket bound on it sees)."""
    public_address: str
    """The source address the internet sees: its router's WAN address when behind a NAT."""

    def argv(self, *command: str) -> list[str]:
        """Return the argv that runs *command* inside this host's namespace."""
        return ["ip", "netns", "exec", self.namespace, *command]

    async def run(self, *command: str, **kwargs: Any) -> asyncio.subprocess.Process:
        """Start *command* on this host, with stdin and stdout piped unless *kwargs* say otherwise.

        :param kwargs: passed to :func:`asyncio.create_subprocess_exec`.
        :returns: the process; the lab kills it when it closes, if it is still running.
        """
        options: dict[str, Any] = {
            "stdin": asyncio.subprocess.PIPE,
            "stdout": asyncio.subprocess.PIPE,
        }
        options.update(kwargs)
        return await asyncio.create_subprocess_exec(*self.argv(*command), **options)

    def run_sync(
        self, *command: str, input: str | None = None, timeout: float = COMMAND_TIMEOUT
    ) -> str:
        """Run *command* on this host, wait for it and return its standard output.

        :raises NatLabError: if it fails or takes longer than *timeout* seconds.
        """
        return _run(self.argv(*command), input=input, timeout=timeout)


@dataclass(frozen=True)
class Router(Host):
    """A router between the internet and its own LAN; :attr:`address` is its LAN address."""

    kind: NatKind
    """How it translates and filters."""
    wan_address: str
    """Its address on the internet (the source address its NAT'd hosts appear to have)."""
    lan_prefix: str
    """Its LAN, e.g. ``10.1.0.0/24`` (``198.51.100.x/28`` for :attr:`NatKind.NONE`)."""


def _run(argv: list[str], *, input: str | None = None, timeout: float = COMMAND_TIMEOUT) -> str:
    """Run one command to completion and return its stdout; raise :class:`NatLabError` if not."""
    command = " ".join(argv)
    try:
        completed = subprocess.run(
            argv, input=input, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as error:
        raise NatLabError(f"`{command}` did not finish within {timeout} s") from error
    except OSError as error:
        raise NatLabError(f"`{command}` could not start: {error}") from error
    if completed.returncode != 0:
        detail = completed.stderr.strip() or completed.stdout.strip() or "no output"
        raise NatLabError(f"`{command}` failed with exit status {completed.returncode}: {detail}")
    return completed.stdout


def _sysctl_script(required: dict[str, str], optional: dict[str, str]) -> str:
    """Shell script writing sysctls under /proc/sys (no procps needed); optional keys may lack."""
    lines = ["set -e"]
    for key, value in required.items():
        lines.append(f"echo {value} > /proc/sys/{key.replace('.', '/')}")
    for key, value in optional.items():
        path = f"/proc/sys/{key.replace('.', '/')}"
        lines.append(f"if [ -e {path} ]; then echo {value} > {path}; fi")
    return "\n".join(lines)


def _router_sysctls(namespace: str) -> list[str]:
    """Argv that turns on forwarding and keeps bridges pure layer 2 in *namespace*."""
    script = _sysctl_script(
        {"net.ipv4.ip_forward": "1"},
        # With br_netfilter loaded, bridged frames would traverse the nftables hooks.
        {"net.bridge.bridge-nf-call-iptables": "0"},
    )
    return ["ip", "netns", "exec", namespace, "sh", "-c", script]


def _nat_ruleset(kind: NatKind) -> str:
    """The nftables ruleset of a NAT router of *kind* (interfaces ``wan`` and ``lan``)."""
    if kind is NatKind.EIM:
        masquerade = "masquerade"
    elif kind is NatKind.SYMMETRIC:
        masquerade = "masquerade random,fully-random"
    else:
        raise ValueError(f"{kind} routers do not translate addresses")
    return f"""
table ip natlab {{
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        oifname "wan" {masquerade}
    }}
    chain forward {{
        type filter hook forward priority filter; policy drop;
        ct state established,related accept
        iifname "lan" oifname "wan" accept
    }}
    chain input {{
        type filter hook input priority filter; policy accept;
        iifname "wan" ct state new drop
    }}
}}
"""


def _delete_namespace(namespace: str) -> None:
    """Kill every process in *namespace*, then delete it; a missing namespace is fine."""
    try:
        pids = _run(["ip", "netns", "pids", namespace]).split()
    except NatLabError:
        pids = []
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    try:
        _run(["ip", "netns", "delete", namespace])
    except NatLabError:
        if _namespace_exists(namespace):
            raise


def _namespace_exists(namespace: str) -> bool:
    return os.path.exists(os.path.join("/run/netns", namespace)) or os.path.exists(
        os.path.join("/var/run/netns", namespace)
    )


def _probe() -> None:
    """Build and delete the smallest lab there is: a namespace with a veth, a bridge and a NAT."""
    namespace = f"knlprobe{secrets.token_hex(3)}"
    _run(["ip", "netns", "add", namespace])
    try:
        _run(["ip", "-n", namespace, "link", "add", "wan", "type", "veth", "peer", "name", "lan"])
        _run(["ip", "-n", namespace, "link", "add", "br0", "type", "bridge"])
        _run(_router_sysctls(namespace))
        _run(["ip", "netns", "exec", namespace, "nft", "-f", "-"], input=_nat_ruleset(NatKind.EIM))
        _run(
            ["ip", "netns", "exec", namespace, "nft", "-f", "-"],
            input=_nat_ruleset(NatKind.SYMMETRIC).replace("natlab", "natlab2"),
        )
    finally:
        _delete_namespace(namespace)


@functools.cache
def unavailable_reason() -> str | None:
    """Say why a :class:`NatLab` cannot run on this machine, or return None if it can.

    The first call builds and deletes a one-namespace probe (tens of milliseconds); the answer
    is cached for the life of the process.
    """
    if not sys.platform.startswith("linux"):
        return f"the NAT lab needs Linux network namespaces; this is {sys.platform}"
    if os.geteuid() != 0:
        return (
            "the NAT lab needs root to create network namespaces (run as root, or in a "
            "container with CAP_NET_ADMIN and CAP_SYS_ADMIN)"
        )
    for tool, package in (("ip", "iproute2"), ("nft", "nftables")):
        if shutil.which(tool) is None:
            return f"the NAT lab needs `{tool}`: apt-get install -y {package}"
    try:
        _probe()
    except NatLabError as error:
        return f"the NAT lab cannot build namespaces and NAT rules here: {error}"
    return None


class NatLab:
    """A closed internet of namespaces: public hosts, NAT routers and the hosts behind them.

    Use it as a context manager (``with`` or ``async with``) or call :meth:`close`.

    :param prefix: namespace-name prefix, unique per lab; a random one by default.
    :raises LabUnavailable: if :func:`unavailable_reason` says the lab cannot run here.
    :raises NatLabError: if building the internet fails (nothing is left behind).
    """

    def __init__(self, prefix: str | None = None) -> None:
        reason = unavailable_reason()
        if reason is not None:
            raise LabUnavailable(reason)
        if prefix is None:
            prefix = f"knl{secrets.token_hex(3)}"
        if PREFIX_PATTERN.fullmatch(prefix) is None:
            raise ValueError(
                f"lab prefix {prefix!r} must be 1-16 lowercase letters or digits, "
                "starting with a letter"
            )
        self.prefix = prefix
        self._namespaces: list[str] = []
        self._hosts: dict[str, Host] = {}
        self._lan_next: dict[str, int] = {}
        self._internet_next = 2  # .1 is the gateway
        self._nat_lans = 0
        self._open_lans = 0
        self._closed = False
        atexit.register(self.close)
        try:
            self._internet = self._add_namespace(INTERNET_NAME)
            self._ip(self._internet, "link", "add", "br0", "type", "bridge")
            self._ip(self._internet, "addr", "add", f"{INTERNET_GATEWAY}/24", "dev", "br0")
            self._ip(self._internet, "link", "set", "br0", "up")
            self._run(_router_sysctls(self._internet))
        except BaseException:
            self.close()
            raise

    # -- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await asyncio.to_thread(self.close)

    def close(self) -> None:
        """Kill every process in the lab and delete all its namespaces; idempotent.

        :raises NatLabError: if a namespace could not be deleted (all others are still tried).
        """
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        failures: list[str] = []
        for namespace in reversed(self._namespaces):
            try:
                _delete_namespace(namespace)
            except NatLabError as error:
                failures.append(str(error))
        self._namespaces.clear()
        if failures:
            raise NatLabError("the NAT lab could not delete: " + "; ".join(failures))

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has run."""
        return self._closed

    @property
    def namespaces(self) -> tuple[str, ...]:
        """The namespaces this lab has created and not yet deleted, internet first."""
        return tuple(self._namespaces)

    @property
    def hosts(self) -> dict[str, Host]:
        """Every host and router of the lab by name (a copy)."""
        return dict(self._hosts)

    # -- building ------------------------------------------------------------------------------

    def public_host(self, name: str) -> Host:
        """Add a host on the internet, with an address in 203.0.113.0/24."""
        namespace = self._add_namespace(name)
        address = self._attach_to_internet(namespace, "eth0")
        host = Host(name=name, namespace=namespace, address=address, public_address=address)
        self._hosts[name] = host
        return host

    def nat(self, name: str, kind: NatKind) -> Router:
        """Add a router with a WAN address on the internet and its own LAN.

        NAT routers (:attr:`NatKind.EIM`, :attr:`NatKind.SYMMETRIC`) get a private LAN
        ``10.N.0.0/24``; a :attr:`NatKind.NONE` router gets a routable ``198.51.100.x/28`` that
        the internet gateway routes to it, so its hosts are public and unfiltered.
        """
        lan = self._allocate_lan(kind)
        namespace = self._add_namespace(name)
        wan_address = self._attach_to_internet(namespace, "wan")
        lan_address = str(lan.network_address + 1)
        self._ip(namespace, "link", "add", "lan", "type", "bridge")
        self._ip(namespace, "addr", "add", f"{lan_address}/{lan.prefixlen}", "dev", "lan")
        self._ip(namespace, "link", "set", "lan", "up")
        self._run(_router_sysctls(namespace))
        if kind is NatKind.NONE:
            self._ip(self._internet, "route", "add", str(lan), "via", wan_address)
        else:
            self._run(["ip", "netns", "exec", namespace, "nft", "-f", "-"], _nat_ruleset(kind))
        router = Router(
            name=name,
            namespace=namespace,
            address=lan_address,
            public_address=wan_address,
            kind=kind,
            wan_address=wan_address,
            lan_prefix=str(lan),
        )
        self._hosts[name] = router
        self._lan_next[name] = 2
        return router

    def private_host(self, name: str, router: Router) -> Host:
        """Add a host on *router*'s LAN, routing by default through the router."""
        if self._hosts.get(router.name) != router:
            raise NatLabError(f"router {router.name!r} does not belong to lab {self.prefix!r}")
        lan = ipaddress.IPv4Network(router.lan_prefix)
        index = self._lan_next[router.name]
        if index >= lan.num_addresses - 1:
            raise NatLabError(f"the LAN {lan} of router {router.name!r} is full")
        self._check_open()
        namespace = self._add_namespace(name)
        self._lan_next[router.name] = index + 1
        address = str(lan.network_address + index)
        port = f"l{index}"
        self._veth(namespace, "eth0", router.namespace, port)
        self._ip(router.namespace, "link", "set", port, "master", "lan", "up")
        self._ip(namespace, "addr", "add", f"{address}/{lan.prefixlen}", "dev", "eth0")
        self._ip(namespace, "link", "set", "eth0", "up")
        self._ip(namespace, "route", "add", "default", "via", router.address)
        public = address if router.kind is NatKind.NONE else router.wan_address
        host = Host(name=name, namespace=namespace, address=address, public_address=public)
        self._hosts[name] = host
        return host

    # -- internals -----------------------------------------------------------------------------

    def _run(self, argv: list[str], input: str | None = None) -> str:
        """Run one build command (a seam: tests make it fail to prove partial builds clean up)."""
        return _run(argv, input=input)

    def _ip(self, namespace: str, *arguments: str) -> None:
        """Run ``ip -n namespace arguments...``."""
        self._run(["ip", "-n", namespace, *arguments])

    def _check_open(self) -> None:
        if self._closed:
            raise NatLabError(f"the NAT lab {self.prefix!r} is closed")

    def _add_namespace(self, name: str) -> str:
        """Create the namespace of host *name*, with ``lo`` up, and record it for deletion."""
        self._check_open()
        if NAME_PATTERN.fullmatch(name) is None:
            raise ValueError(
                f"host name {name!r} must be 1-20 lowercase letters, digits or '-', "
                "starting with a letter"
            )
        if name in self._hosts or (name == INTERNET_NAME and self._namespaces):
            raise ValueError(f"the lab already has a host named {name!r}")
        namespace = f"{self.prefix}-{name}"
        self._run(["ip", "netns", "add", namespace])
        self._namespaces.append(namespace)
        self._ip(namespace, "link", "set", "lo", "up")
        return namespace

    def _veth(self, namespace: str, name: str, peer_namespace: str, peer_name: str) -> None:
        """Create a veth pair directly between two lab namespaces (never in the root one)."""
        peer = ("peer", "name", peer_name, "netns", peer_namespace)
        self._ip(namespace, "link", "add", name, "type", "veth", *peer)

    def _attach_to_internet(self, namespace: str, interface: str) -> str:
        """Plug *namespace* into the internet bridge; return its new internet address."""
        index = self._internet_next
        if index >= INTERNET.num_addresses - 1:
            raise NatLabError(f"the lab's internet {INTERNET} is full")
        self._internet_next += 1
        address = str(INTERNET.network_address + index)
        port = f"p{index}"
        self._veth(namespace, interface, self._internet, port)
        self._ip(self._internet, "link", "set", port, "master", "br0", "up")
        self._ip(namespace, "addr", "add", f"{address}/{INTERNET.prefixlen}", "dev", interface)
        self._ip(namespace, "link", "set", interface, "up")
        self._ip(namespace, "route", "add", "default", "via", str(INTERNET_GATEWAY))
        return address

    def _allocate_lan(self, kind: NatKind) -> ipaddress.IPv4Network:
        """Reserve the next LAN for a router of *kind*."""
        self._check_open()
        if kind is NatKind.NONE:
            lans = list(OPEN_LANS.subnets(new_prefix=OPEN_LAN_PREFIX))
            if self._open_lans >= len(lans):
                raise NatLabError(f"the lab has no open LAN left in {OPEN_LANS}")
            self._open_lans += 1
            return lans[self._open_lans - 1]
        if self._nat_lans >= 254:
            raise NatLabError("the lab has no private LAN left in 10.1-254.0.0/24")
        self._nat_lans += 1
        return ipaddress.IPv4Network(f"10.{self._nat_lans}.0.0/24")
