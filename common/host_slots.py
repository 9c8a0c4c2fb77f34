"""`--per-host` for a whole Ray cluster: every fetch task asks shared limiters for a host's slot.

    limiter = HostLimiter(per_host=8, ttl=lease_ttl(timeout=10))   # in a Ray actor (async)
    slots = ClusterHostSlots([actor, ...], fallback=LocalHostSlots(8))  # in each fetch task
    with slots("example.org"):                                      # as a Fetcher's host_slots
        ...one request, body included...

A host's count lives in one limiter, chosen by a stable hash of the host, so several limiter
actors share a cluster's hosts and no one of them serves every request. A slot is a lease:
`acquire` waits (asyncio, first come first served) until the host has fewer than `per_host`
leases, `release` ends one. A lease nobody releases (its worker died) expires after `ttl`, the
longest a request holds its slot plus a margin, and its slot goes to the next in line.
A limiter that dies restarts empty: for a moment the leases it forgot are not counted. One that
cannot be reached at all leaves each process with its own cap (`fallback`), as without Ray.

Asking costs a Ray actor call (milliseconds of CPU on both sides), so a fetch task keeps a lease
after its request for its next request to the same host, and gives leases back in batches: a
thread of its own calls `settle` on each limiter a few times a second, which ends the leases the
task is done with and names the hosts of its kept leases that another request waits for (those
go back at once). A request therefore asks a limiter only for a host its task holds no free
lease of, and a kept lease holds up another task for at most one tick.

HostLimiter is plain asyncio (tested without Ray) and imports nothing heavy: its actor is a
process of its own. ClusterHostSlots imports Ray only when used.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
import zlib
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field

LEASE_MARGIN = 30.0  # seconds past the longest hold: DNS, which no timeout bounds, and scheduling
KEEP_IDLE = 5.0  # seconds a fetch task keeps a host's lease after a request, for its next one there
TICK = 0.1  # seconds between a fetch task's `settle` calls while it keeps or gives back leases
SWEEP_EVERY = 10_000  # acquires between sweeps of hosts that no call touches any more

log = logging.getLogger(__name__)


def lease_ttl(timeout: float) -> float:
    """Seconds after which a lease counts as abandoned, for a Fetcher with this timeout."""
    from common.fetch import longest_slot_hold

    return longest_slot_hold(timeout) + LEASE_MARGIN


def limiter_for(host: str, count: int) -> int:
    """Which of `count` limiters counts `host`: the same in every process and every run."""
    return zlib.crc32(host.encode("utf-8", "surrogatepass")) % count


# ---------------------------------------------------------------------------- the limiter
@dataclass
class _Host:
    leases: dict[str, float] = field(default_factory=dict)  # lease id -> when it expires
    queue: OrderedDict[str, asyncio.Future] = field(default_factory=OrderedDict)  # waiting, in order


class HostLimiter:
    """At most `per_host` leases per host; a lease lapses `ttl` seconds after it was granted."""

    def __init__(self, per_host: int, ttl: float, clock=time.monotonic):
        assert per_host >= 1 and ttl > 0, "a limiter needs at least one slot per host and a positive lease time"
        self.per_host, self.ttl, self.clock = per_host, ttl, clock
        self._hosts: dict[str, _Host] = {}
        self._acquires = 0

    async def acquire(self, host: str, lease: str) -> None:
        """Return once `lease` holds one of `host`'s slots."""
        self._acquires += 1
        if self._acquires % SWEEP_EVERY == 0:
            self._sweep()
        h = self._hosts.setdefault(host, _Host())
        if lease in h.leases:  # the same call again (retried after a lost reply): still one slot
            h.leases[lease] = self.clock() + self.ttl
            return
        waiting = h.queue.get(lease) or asyncio.get_running_loop().create_future()
        h.queue[lease] = waiting
        self._grant(h)
        try:
            while not waiting.done():
                # nobody may release: wake when the oldest lease lapses, to hand its slot on
                await asyncio.wait({waiting}, timeout=max(0.0, min(h.leases.values()) - self.clock()))
                self._grant(h)
        finally:
            if not waiting.done():  # cancelled while in line
                h.queue.pop(lease, None)
                self._forget_if_idle(host)

    async def release(self, host: str, lease: str) -> None:
        """End `lease` (nothing happens if it already lapsed: its slot may be someone else's now)."""
        h = self._hosts.get(host)
        if h is None:
            return
        h.leases.pop(lease, None)
        self._grant(h)
        self._forget_if_idle(host)

    async def settle(self, releases: list[tuple[str, str]], kept: list[str]) -> list[str]:
        """End the leases in `releases` ((host, lease) pairs); return the hosts among `kept` (whose
        leases the caller keeps idle) for which a request now waits."""
        for host, lease in releases:
            await self.release(host, lease)
        return [host for host in kept if host in self._hosts and self._hosts[host].queue]

    async def held(self, host: str) -> int:
        """Leases of `host` that have not lapsed."""
        h = self._hosts.get(host)
        if h is None:
            return 0
        self._expire(h)
        return len(h.leases)

    # ------------------------------------------------------------------ inside
    def _expire(self, h: _Host) -> None:
        now = self.clock()
        for lease in [lease for lease, until in h.leases.items() if until <= now]:
            del h.leases[lease]

    def _grant(self, h: _Host) -> None:
        """Hand the free slots to the first in line."""
        self._expire(h)
        while h.queue and len(h.leases) < self.per_host:
            lease, waiting = h.queue.popitem(last=False)
            h.leases[lease] = self.clock() + self.ttl
            waiting.set_result(None)

    def _forget_if_idle(self, host: str) -> None:
        h = self._hosts.get(host)
        if h is not None and not h.leases and not h.queue:
            del self._hosts[host]

    def _sweep(self) -> None:
        """Drop lapsed leases of every host (a host seen once, by a worker that died, stays otherwise)."""
        for host, h in list(self._hosts.items()):
            self._grant(h)
            self._forget_if_idle(host)


# ---------------------------------------------------------------------------- the client
class ClusterHostSlots:
    """A Fetcher's `host_slots` whose counts live in limiter actors shared by the whole run.

    A lease outlives its request: this task's next request to the same host takes it without
    asking a limiter again (a round trip through Ray costs milliseconds of CPU, and a city's images
    come mostly from a few hosts). A kept lease still counts at the limiter, so the cap holds. It
    goes back when another request waits for its host (seen at the next `settle`, every `tick`
    seconds), when it sat idle `keep_idle` seconds, or when it is too old to reuse: one is reused
    only for `reuse_for` seconds after it was granted, so every request ends before the limiter
    would expire its lease. Leases given back wait for the next tick, and go in one call."""

    def __init__(self, limiters: list, fallback, reuse_for: float = LEASE_MARGIN / 2, keep_idle: float = KEEP_IDLE,
                 tick: float = TICK):
        """`fallback`: host slots to use while no limiter answers (common.fetch.LocalHostSlots)."""
        assert limiters, "no limiter to ask"
        self.limiters, self.fallback = limiters, fallback
        self.reuse_for, self.keep_idle, self.tick = reuse_for, keep_idle, tick
        self._idle: dict[str, list[tuple[str, float, float]]] = {}  # host -> (lease, granted at, idle since)
        self._waiting: dict[str, int] = {}  # host -> this task's requests waiting for the limiter
        self._done: list[tuple[str, str]] = []  # (host, lease) given back at the next tick
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self._warned = False

    @contextmanager
    def __call__(self, host: str):
        limiter = self._limiter(host)
        held = self._take_idle(host)
        if held is None:
            lease = uuid.uuid4().hex
            self._count_waiting(host, +1)
            try:
                granted = self._acquire(limiter, host, lease)
            finally:
                self._count_waiting(host, -1)
            if not granted:
                with self.fallback(host):
                    yield
                return
            held = (lease, time.monotonic())
        try:
            yield
        finally:
            self._park(host, *held)

    def close(self) -> None:
        """Give back every kept lease (the fetch task is done)."""
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        with self._lock:
            done = self._done + [(host, lease) for host, kept in self._idle.items() for lease, _, _ in kept]
            self._done, self._idle = [], {}
        for limiter, releases in self._by_limiter(done).items():
            limiter.settle.remote(releases, [])  # nobody waits for the answer

    # ------------------------------------------------------------------ requests
    def _limiter(self, host: str):
        return self.limiters[limiter_for(host, len(self.limiters))]

    def _by_limiter(self, pairs) -> dict:
        out: dict = {}
        for host, lease in pairs:
            out.setdefault(self._limiter(host), []).append((host, lease))
        return out

    def _take_idle(self, host: str) -> tuple[str, float] | None:
        """A lease this task kept for `host` and may still reuse."""
        now, held = time.monotonic(), None
        with self._lock:
            kept = self._idle.get(host, [])
            while kept and held is None:
                lease, granted, _ = kept.pop()
                if now - granted < self.reuse_for:
                    held = (lease, granted)
                else:
                    self._done.append((host, lease))
            if not kept:
                self._idle.pop(host, None)
        return held

    def _count_waiting(self, host: str, step: int) -> None:
        with self._lock:
            self._waiting[host] = self._waiting.get(host, 0) + step
            if not self._waiting[host]:
                del self._waiting[host]

    def _park(self, host: str, lease: str, granted: float) -> None:
        """Keep the lease for this task's next request to `host`; but when one of its requests
        already waits for the limiter, the lease goes back now, for that request to get."""
        now = time.monotonic()
        with self._lock:
            wanted_here = bool(self._waiting.get(host))
            if not wanted_here:
                if now - granted < self.reuse_for and not self._stop.is_set():
                    self._idle.setdefault(host, []).append((lease, granted, now))
                else:
                    self._done.append((host, lease))
                self._start_ticker()
        if wanted_here:
            self._limiter(host).settle.remote([(host, lease)], [])

    # ------------------------------------------------------------------ the ticker
    def _start_ticker(self) -> None:
        """The thread that gives leases back (under the lock): finished ones, idle ones, and kept
        ones another request waits for, so a kept lease never holds up another task for long."""
        if self._ticker is None:
            self._ticker = threading.Thread(target=self._tick_loop, name="host-slots-ticker", daemon=True)
            self._ticker.start()

    def _tick_loop(self) -> None:
        while not self._stop.wait(self.tick):
            self._tick()

    def _tick(self) -> None:
        with self._lock:
            done, self._done = self._done + self._stale(time.monotonic()), []
            kept = list(self._idle)
        calls: dict = {}  # limiter -> (leases to give back, kept hosts to ask about)
        for host, lease in done:
            calls.setdefault(self._limiter(host), ([], []))[0].append((host, lease))
        for host in kept:
            calls.setdefault(self._limiter(host), ([], []))[1].append(host)
        for limiter, (releases, hosts) in calls.items():
            wanted = self._settle(limiter, releases, hosts)
            if wanted:
                with self._lock:
                    back = [(host, lease) for host in wanted for lease, _, _ in self._idle.pop(host, [])]
                if back:
                    limiter.settle.remote(back, [])

    def _stale(self, now: float) -> list[tuple[str, str]]:
        """Take out the kept leases idle too long or too old to reuse (under the lock)."""
        stale = []
        for host in list(self._idle):
            keep = []
            for lease, granted, since in self._idle[host]:
                if now - since > self.keep_idle or now - granted >= self.reuse_for:
                    stale.append((host, lease))
                else:
                    keep.append((lease, granted, since))
            if keep:
                self._idle[host] = keep
            else:
                del self._idle[host]
        return stale

    # ------------------------------------------------------------------ Ray calls
    def _acquire(self, limiter, host: str, lease: str) -> bool:
        import ray

        try:
            ray.get(limiter.acquire.remote(host, lease))
            return True
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnschedulableError) as e:  # restarts spent
            self._gone(e)
            return False

    def _settle(self, limiter, releases: list, hosts: list[str]) -> list[str]:
        """Hosts among `hosts` that another request waits for; none when the limiter is gone."""
        import ray

        if not hosts:  # nothing kept to ask about: give back without waiting for the answer
            limiter.settle.remote(releases, [])
            return []
        try:
            return ray.get(limiter.settle.remote(releases, hosts))
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnschedulableError) as e:
            self._gone(e)
            return []

    def _gone(self, e: Exception) -> None:
        if not self._warned:
            self._warned = True
            log.warning("a per-host limiter is gone (%s): --per-host now holds per fetch task",
                        str(e).splitlines()[0][:200])
