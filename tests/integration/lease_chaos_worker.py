"""One chaos worker: random acquire/renew/resize/release/crash operations on 2 GPUs.

Run as ``python lease_chaos_worker.py URL PREFIX SEED OPS LOG``. Every grant is appended to LOG
as ``id token pid`` (for the "one owner per lease" check). A crash is ``os._exit`` with leases
held, so other workers must reap or outwait them. Exits 0 when its operations are done, 3
after a crash (the parent starts a successor for the remaining operations).
"""

from __future__ import annotations

import asyncio
import os
import random
import sys

from mlsup.errors import LeaseLost, LeaseTimeout
from mlsup.kit.leases import GPUBoss, GPULease, LeaseTiming, Priority

DEVICES = [{"index": 0, "memory_mb": 1000}, {"index": 1, "memory_mb": 800}]
TIMING = LeaseTiming(ttl_s=0.6, renew_interval_s=0.15, grace_s=0.1, waiter_ttl_s=0.5)


async def main(url: str, prefix: str, seed: int, ops: int, log_path: str) -> int:
    rng = random.Random(seed)
    boss = GPUBoss(url, prefix, DEVICES, timing=TIMING)
    await boss.connect()
    held: list[GPULease] = []
    with open(log_path, "a", encoding="utf-8") as log:
        for done in range(ops):
            held = [lease for lease in held if lease.held]
            roll = rng.random()
            try:
                if roll < 0.45 or not held:
                    lease = await boss.acquire(
                        rng.randint(50, 700),
                        f"m{seed}",
                        priority=rng.choice(list(Priority)),
                        gpu=rng.choice([0, 1, None]),
                        timeout=rng.choice([0.0, 0.01, 0.05]),
                    )
                    log.write(f"{lease.id} {lease.token} {os.getpid()}\n")
                    log.flush()
                    held.append(lease)
                elif roll < 0.65:
                    await boss.renew(rng.choice(held))
                elif roll < 0.8:
                    await boss.resize(rng.choice(held), rng.randint(20, 700))
                elif roll < 0.995:
                    lease = rng.choice(held)
                    await boss.release(lease)
                else:
                    print(f"crash after {done + 1}", flush=True)
                    os._exit(3)
            except (LeaseTimeout, LeaseLost):
                pass  # expected: no room now, or preempted/expired while we were busy
            # Anything else (LeaseNotHeld on our own lease, a Redis error) fails the worker.
    await boss.close()
    print(f"done {ops}", flush=True)
    return 0


if __name__ == "__main__":
    url, prefix, seed, ops, log_path = sys.argv[1:6]
    sys.exit(asyncio.run(main(url, prefix, int(seed), int(ops), log_path)))
