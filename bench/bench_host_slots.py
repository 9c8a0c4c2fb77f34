"""Benchmark: what step 05's cluster-wide --per-host costs each request under --ray.

A local Ray (loopback, as `--ray` alone starts it) with one limiter actor (common/host_slots.py).
In one Ray task, as in a fetch task, threads take a slot and give it back (acquire waits for the
answer, release does not), over `--hosts` hosts with --per-host above the threads, so nobody
waits for a slot and only the cost of asking is measured:
- one thread: the round trip that each request pays before it starts;
- `--threads` threads at once, with no request in between: how many slots per second one
  limiter actor grants at most (a fetch thread asks once per request, so far less often).
Alongside, the same for a no-op async actor method: what any Ray actor call costs here. CPU is
that of the whole process tree (the task, the limiter, Ray's own processes).

    python bench/bench_host_slots.py --threads 16 --requests 5000 --reps 3
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

WARM = 200  # calls before the clock starts (the CPU figure counts them too)


class Noop:
    async def ping(self) -> None:
        return None


def hammer(limiter, noop, kind: str, threads: int, requests: int, hosts: int, per_host: int) -> float:
    """In a Ray worker, as a fetch task: seconds for `requests` slots (or no-op calls) from `threads` threads."""
    import concurrent.futures as cf

    import ray

    from common.fetch import LocalHostSlots
    from common.host_slots import ClusterHostSlots

    slots = ClusterHostSlots([limiter], LocalHostSlots(per_host))

    def one_slot(i: int) -> None:
        with slots(f"img{i % hosts}.example.org"):
            pass

    def one_noop(i: int) -> None:
        ray.get(noop.ping.remote())

    call = one_slot if kind == "slot" else one_noop
    with cf.ThreadPoolExecutor(threads) as pool:
        list(pool.map(call, range(WARM)))  # warm: connections to the actor
        started = time.perf_counter()
        list(pool.map(call, range(requests)))
    return time.perf_counter() - started


def tree_cpu_s() -> float:
    total = 0.0
    for p in [psutil.Process(), *psutil.Process().children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=16, help="threads asking at once, as --workers (default: %(default)s)")
    p.add_argument("--requests", type=int, default=5_000, help="calls per measurement (default: %(default)s)")
    p.add_argument("--hosts", type=int, default=1000, help="distinct hosts (default: %(default)s)")
    p.add_argument("--reps", type=int, default=3, help="repetitions (default: %(default)s)")
    args = p.parse_args()
    from common import ray_runner
    from common.host_slots import HostLimiter

    ray_runner.connect(None)
    import ray

    runs = {}
    try:
        per_host, actor = args.threads + 1, ray.remote(num_cpus=0, max_concurrency=ray_runner.LIMITER_CONCURRENCY)
        limiter, noop = actor(HostLimiter).remote(per_host, 600.0), actor(Noop).remote()
        task = ray.remote(num_cpus=1)(hammer)
        for _ in range(args.reps):
            for key in [(kind, n) for kind in ("slot", "noop") for n in (1, args.threads)]:
                cpu = tree_cpu_s()
                seconds = ray.get(task.remote(limiter, noop, *key, args.requests, args.hosts, per_host))
                runs.setdefault(key, []).append((seconds, tree_cpu_s() - cpu))
    finally:
        ray.shutdown()
    wall = {key: statistics.median(s for s, _ in r) / args.requests for key, r in runs.items()}
    cpu = {key: statistics.median(c for _, c in r) / (args.requests + WARM) for key, r in runs.items()}
    print(f"{args.requests:,} calls per measurement over {args.hosts:,} hosts, one limiter actor, medians of {args.reps}:")
    print(f"  one thread: {wall['slot', 1] * 1e3:.2f} ms per request (acquire + release), {cpu['slot', 1] * 1e3:.2f} "
          f"CPU-ms; a no-op actor call {wall['noop', 1] * 1e3:.2f} ms, {cpu['noop', 1] * 1e3:.2f} CPU-ms")
    print(f"  {args.threads} threads: one limiter grants {1 / wall['slot', args.threads]:,.0f} slots/s "
          f"({cpu['slot', args.threads] * 1e3:.2f} CPU-ms each); no-op actor calls {1 / wall['noop', args.threads]:,.0f}/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
