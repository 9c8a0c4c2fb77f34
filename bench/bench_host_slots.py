"""Benchmark: what step 05's cluster-wide --per-host costs each request under --ray.

A local Ray (loopback, as `--ray` alone starts it) with one limiter actor (common/host_slots.py).
In one Ray task, as in a fetch task, threads take a slot and give it back (acquire waits for the
answer, release does not), over `--hosts` hosts with --per-host above the threads, so nobody
waits for a slot and only the cost of asking is measured:
- one thread: the round trip that each request pays before it starts;
- `--threads` threads at once, with no request in between: how many slots per second one
  limiter actor grants at most (a fetch thread asks once per request, so far less often).
Alongside, the same for a no-op async actor method: what any Ray actor call costs here.

    python bench/bench_host_slots.py --threads 16 --requests 5000 --reps 3
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


class Noop:
    async def ping(self) -> None:
        return None


def hammer(limiters: list, noop, threads: int, requests: int, hosts: int, per_host: int) -> dict:
    """In a Ray worker, as a fetch task: seconds for `requests` slots (and as many no-op calls)
    from one thread and from `threads` threads."""
    import concurrent.futures as cf

    import ray

    from common.fetch import LocalHostSlots
    from common.host_slots import ClusterHostSlots

    slots = ClusterHostSlots(limiters, LocalHostSlots(per_host))

    def one_slot(i: int) -> None:
        with slots(f"img{i % hosts}.example.org"):
            pass

    def one_noop(i: int) -> None:
        ray.get(noop.ping.remote())

    out = {}
    for name, call in (("slot", one_slot), ("noop", one_noop)):
        for n in (1, threads):
            with cf.ThreadPoolExecutor(n) as pool:
                list(pool.map(call, range(200)))  # warm: connections to the actor
                started = time.perf_counter()
                list(pool.map(call, range(requests)))
            out[name, n] = time.perf_counter() - started
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=16, help="threads asking at once, as --workers (default: %(default)s)")
    p.add_argument("--requests", type=int, default=5_000, help="acquire + release pairs per rep (default: %(default)s)")
    p.add_argument("--hosts", type=int, default=1000, help="distinct hosts (default: %(default)s)")
    p.add_argument("--reps", type=int, default=3, help="repetitions (default: %(default)s)")
    args = p.parse_args()
    from common import ray_runner
    from common.host_slots import HostLimiter

    ray_runner.connect(None)
    import ray

    try:
        per_host, actor = args.threads + 1, ray.remote(num_cpus=0, max_concurrency=ray_runner.LIMITER_CONCURRENCY)
        limiter, noop = actor(HostLimiter).remote(per_host, 600.0), actor(Noop).remote()
        task = ray.remote(num_cpus=1)(hammer)
        runs = [ray.get(task.remote([limiter], noop, args.threads, args.requests, args.hosts, per_host))
                for _ in range(args.reps)]
    finally:
        ray.shutdown()
    seconds = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    print(f"{args.requests:,} calls over {args.hosts:,} hosts, one limiter actor, medians of {args.reps}:")
    print(f"  one thread: {seconds['slot', 1] / args.requests * 1e3:.2f} ms per request (acquire + release); "
          f"a no-op actor call {seconds['noop', 1] / args.requests * 1e3:.2f} ms")
    print(f"  {args.threads} threads: one limiter grants {args.requests / seconds['slot', args.threads]:,.0f} slots/s; "
          f"no-op actor calls {args.requests / seconds['noop', args.threads]:,.0f}/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
