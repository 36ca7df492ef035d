"""One proof-of-work search process: ``python -m korium.identity._pow_worker KEY BITS I N``.

Scans nonce chunks ``I, I+N, I+2N, ...`` for public key *KEY* (hex) and writes ``hashes <n>``
lines about ten times a second, then ``found <nonce>``. It exits when it finds a nonce or when
the parent goes away (its next write hits a broken pipe).
"""

from __future__ import annotations

import sys
import time

from korium.identity.pow import CHUNK, _scan, _target


def main(argv: list[str]) -> int:
    key, target = bytes.fromhex(argv[0]), _target(int(argv[1]))
    chunk, stride = int(argv[2]), int(argv[3])
    done, last = 0, time.monotonic()
    out = sys.stdout
    try:
        while True:
            found = _scan(key, target, chunk * CHUNK, CHUNK)
            if found is not None:
                out.write(f"found {found}\n")
                out.flush()
                return 0
            done += CHUNK
            chunk += stride
            now = time.monotonic()
            if now - last >= 0.1:
                last = now
                out.write(f"hashes {done}\n")
                out.flush()
    except (BrokenPipeError, KeyboardInterrupt):
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
