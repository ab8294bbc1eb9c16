"""8 processes, 10,000 random operations on 2 GPUs, watched by an independent checker."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from mlsup.testing.redis import TestRedis

from .lease_chaos_worker import DEVICES

WORKERS = 8
TOTAL_OPS = 10_000

# The checker reads every GPU atomically (a script: no half-applied state is ever seen) and
# does its own arithmetic: live = expiry in the future and no passed preemption deadline.
CHECK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out, seen = {}, {}
for g = 0, #ARGV - 2 do
  local used = 0
  local entries = redis.call('ZRANGE', ARGV[1] .. 'gpu:' .. g .. ':leases', 0, -1, 'WITHSCORES')
  for i = 1, #entries, 2 do
    local id = entries[i]
    if seen[id] then return {'duplicate', id} end
    seen[id] = true
    local f = redis.call('HMGET', ARGV[1] .. 'lease:' .. id, 'vram_mb', 'preempt_deadline', 'gpu')
    local live = tonumber(entries[i + 1]) > now and f[1]
      and not (f[2] and tonumber(f[2]) <= now)
    if live then
      if tonumber(f[3]) ~= g then return {'wrong-gpu', id} end
      used = used + tonumber(f[1])
    end
  end
  out[#out + 1] = used
end
return out
"""


def test_never_over_capacity_never_two_owners(
    redis_server: TestRedis, redis_prefix: str, tmp_path: Path
) -> None:
    client = redis_server.client()
    check = client.register_script(CHECK)
    capacities = [d["memory_mb"] for d in DEVICES]
    worker = Path(__file__).with_name("lease_chaos_worker.py")
    per_worker = TOTAL_OPS // WORKERS
    remaining = dict.fromkeys(range(WORKERS), per_worker)
    procs: dict[int, subprocess.Popen[str]] = {}
    logs = [tmp_path / f"grants-{i}.log" for i in range(WORKERS)]
    checks = crashes = 0
    peak = [0] * len(capacities)
    seed = 0

    def start(slot: int) -> None:
        nonlocal seed
        seed += 1
        procs[slot] = subprocess.Popen(
            [
                sys.executable,
                str(worker),
                redis_server.url,
                redis_prefix,
                str(slot * 1000 + seed),
                str(remaining[slot]),
                str(logs[slot]),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )

    for slot in range(WORKERS):
        start(slot)
    started = time.monotonic()
    try:
        while procs:
            used = check(args=[redis_prefix, *map(str, capacities)])
            assert not isinstance(used[0], bytes), f"checker found {used}"
            for g, (mb, cap) in enumerate(zip(used, capacities, strict=True)):
                assert mb <= cap, f"GPU {g} over capacity: {mb} > {cap} MB"
                peak[g] = max(peak[g], mb)
            checks += 1
            for slot, proc in list(procs.items()):
                if proc.poll() is None:
                    continue
                out = proc.communicate()[0]
                del procs[slot]
                if proc.returncode == 3:  # crashed on purpose: a successor does the rest
                    crashes += 1
                    remaining[slot] -= int(out.split()[-1])
                    if remaining[slot] > 0:
                        start(slot)
                else:
                    assert proc.returncode == 0, f"worker {slot} failed: {out}"
            assert time.monotonic() - started < 240, "chaos run took too long"
    finally:
        for proc in procs.values():
            proc.kill()
            proc.communicate()
        client.close()
    grants = [line.split() for log in logs if log.exists() for line in log.read_text().splitlines()]
    ids = [g[0] for g in grants]
    assert len(ids) == len(set(ids)), "a lease id was granted twice"
    print(
        f"\n{TOTAL_OPS} ops by {WORKERS} processes in {time.monotonic() - started:.1f} s: "
        f"{len(grants)} grants, {crashes} crashes, {checks} atomic checks, peak MB {peak}"
    )
    assert len(grants) > 1000 and crashes > 0 and checks > 100
    assert any(p > c * 0.8 for p, c in zip(peak, capacities, strict=True))
