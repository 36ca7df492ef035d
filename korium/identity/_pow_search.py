"""The proof-of-work hot loop, also runnable as a worker process.

Run as a script (``python .../_pow_search.py KEY TARGET I N``: by path, so that starting a
worker imports only blake3, not korium) it scans nonce chunks ``I, I+N, I+2N, ...`` for public
key *KEY* against *TARGET* (both hex) and writes ``hashes <n>`` lines about ten times a second,
then ``found <nonce>``. It exits when it finds a nonce or when the parent goes away (its next
write hits a broken pipe).
"""

from __future__ import annotations

import struct
import sys
import time

import blake3

POW_DOMAIN = b"korium-pow-v1:"
CHUNK = 1 << 15
"""Nonces scanned between looks at the stop flag (about 10 ms of work)."""
NONCE_LIMIT = 2**63
"""Nonces stay below this: MessagePack decoders bound integers to int64."""
REPORT_INTERVAL = 0.1

_pack_nonce = struct.Struct("<Q").pack


def scan(public_key: bytes, target: bytes, first: int, count: int) -> int | None:
    """Try nonces ``first .. first+count-1``; return the first whose hash is below *target*."""
    prefix = blake3.blake3(POW_DOMAIN + public_key)
    pack = _pack_nonce
    for nonce in range(first, min(first + count, NONCE_LIMIT)):
        h = prefix.copy()
        h.update(pack(nonce))
        if h.digest() < target:
            return nonce
    return None


def main(argv: list[str]) -> int:
    key, target = bytes.fromhex(argv[0]), bytes.fromhex(argv[1])
    chunk, stride = int(argv[2]), int(argv[3])
    done, last = 0, time.monotonic()
    out = sys.stdout
    try:
        while chunk * CHUNK < NONCE_LIMIT:
            found = scan(key, target, chunk * CHUNK, CHUNK)
            if found is not None:
                out.write(f"found {found}\n")
                out.flush()
                return 0
            done += CHUNK
            chunk += stride
            now = time.monotonic()
            if now - last >= REPORT_INTERVAL:
                last = now
                out.write(f"hashes {done}\n")
                out.flush()
        return 2  # nonce space exhausted (unreachable for difficulties up to 64)
    except (BrokenPipeError, KeyboardInterrupt):
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
