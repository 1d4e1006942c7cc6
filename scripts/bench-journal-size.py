#!/usr/bin/env python3
"""Journal size under churn (issue 11): does the disk stay bounded by the live state?

Starts baton (journal on, its defaults: --appendfsync everysec, rewrite past 64mb and 100 %
growth), holds --held locks, then churns TRY + UNLOCK cycles on rotating keys from one pipelining
connection for --seconds, and every --every seconds prints the journal's size on disk
(aof_current_size), the last snapshot's (aof_base_size), the snapshots written and the cycles so
far. Loopback only; stops by itself.

    scripts/bench-journal-size.py [--baton target/release/baton] [--seconds 300] [--held 10000]
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "attacks"))
from common import Client, Server, info_fields, resp  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baton", default="target/release/baton")
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--every", type=float, default=10)
    parser.add_argument("--held", type=int, default=10_000)
    args = parser.parse_args()
    # A journal directory of its own, removed when the server stops.
    server = Server(args.baton)
    port = server.port
    try:
        info = Client(port, timeout=5)
        holder = Client(port, timeout=60)
        holder.pipeline(resp("LOCK.TRY", f"held:{i}", "holder", "PX", 3_600_000) for i in range(args.held))
        churn = Client(port, timeout=60)
        print("seconds\tcycles\taof_current_size_mb\taof_base_size_mb\tsnapshots", flush=True)
        started = time.monotonic()
        next_sample = started
        cycles = 0
        batch = 500
        while True:
            now = time.monotonic()
            if now >= next_sample:
                p = info_fields(info, "persistence")
                print(f"{now - started:.0f}\t{cycles}\t{int(p['aof_current_size']) / 1e6:.1f}\t"
                      f"{int(p['aof_base_size']) / 1e6:.1f}\t{p['journal_snapshots_written']}", flush=True)
                next_sample += args.every
                if now - started >= args.seconds:
                    break
            # Each TRY is answered ACQUIRED <token>; the UNLOCK needs it, so a batch is TRYs
            # then their UNLOCKs.
            keys = [f"churn:{(cycles + i) % 100_000}" for i in range(batch)]
            churn.sock.sendall(b"".join(resp("LOCK.TRY", key, "churner", "PX", 60_000) for key in keys))
            tokens = [churn.reply()[1] for _ in keys]
            churn.sock.sendall(b"".join(resp("LOCK.UNLOCK", key, "churner", token, "FAILURE")
                                        for key, token in zip(keys, tokens)))
            for _ in keys:
                churn.reply()
            cycles += batch
    finally:
        server.stop()


if __name__ == "__main__":
    main()
