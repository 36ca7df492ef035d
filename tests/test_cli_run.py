"""Two ``korium run`` processes, started as the README shows, connect to each other."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import pytest

KORIUM = Path(sys.executable).with_name("korium")


async def read_until(stream: asyncio.StreamReader, needle: str, limit: float = 30) -> str:
    """Lines from *stream* until one contains *needle*; fails after *limit* seconds."""
    seen: list[str] = []
    async with asyncio.timeout(limit):
        while True:
            line = (await stream.readline()).decode()
            if not line:
                raise AssertionError(f"stream ended before {needle!r}: {''.join(seen)}")
            seen.append(line)
            if needle in line:
                return line


async def start(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        str(KORIUM),
        "run",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def stop(process: asyncio.subprocess.Process) -> str:
    process.send_signal(signal.SIGINT)
    async with asyncio.timeout(30):
        out, _ = await process.communicate()
    assert process.returncode == 0
    return out.decode()


@pytest.mark.skipif(not KORIUM.exists(), reason="the korium script is not installed")
async def test_two_processes_connect(tmp_path: Path) -> None:
    first = await start(
        "--bind", "127.0.0.1:0", "--key-file", str(tmp_path / "a.pem"), "--difficulty", "8"
    )
    second = None
    try:
        assert first.stdout is not None
        assert first.stderr is not None
        first_id = (await read_until(first.stdout, "identity")).split()[1]
        bootstrap = (await read_until(first.stdout, "bootstrap")).split()[1]
        assert bootstrap.startswith("127.0.0.1:")
        assert bootstrap.endswith("/" + first_id)

        second = await start(
            "--bind",
            "127.0.0.1:0",
            "--key-file",
            str(tmp_path / "b.pem"),
            "--difficulty",
            "8",
            "--bootstrap",
            bootstrap,
        )
        assert second.stdout is not None
        assert second.stderr is not None
        second_id = (await read_until(second.stdout, "identity")).split()[1]
        await read_until(second.stderr, f"peer connected: {first_id}")
        await read_until(second.stderr, f"bootstrapped via {bootstrap}")
        await read_until(first.stderr, f"peer connected: {second_id}")
    finally:
        outputs = [await stop(p) for p in (second, first) if p is not None]
    assert all(out.rstrip().endswith("stopped") for out in outputs)


@pytest.mark.skipif(not KORIUM.exists(), reason="the korium script is not installed")
async def test_bad_bootstrap_string_is_a_clear_error(tmp_path: Path) -> None:
    process = await start(
        "--bind",
        "127.0.0.1:0",
        "--key-file",
        str(tmp_path / "a.pem"),
        "--difficulty",
        "4",
        "--bootstrap",
        "127.0.0.1:1/nothex",
    )
    async with asyncio.timeout(30):
        _, err = await process.communicate()
    assert process.returncode == 2
    assert "HOST:PORT/IDENTITY" in err.decode() or "hex" in err.decode()
