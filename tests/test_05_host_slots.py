"""The per-host limiter of a Ray run (common/host_slots.py), as plain asyncio, and the Fetcher's slot seam."""
from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time

from common.fetch import Fetcher, longest_slot_hold
from common.host_slots import HostLimiter, lease_ttl, limiter_for
from sample import images as sample
from tests.conftest import ROOT
from tests.image_server import image_server  # noqa: F401

LONG = 60.0  # a lease time no test waits out


async def settle():
    """Let every coroutine that can run, run."""
    for _ in range(5):
        await asyncio.sleep(0)


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, timeout=30))


def test_a_host_grants_per_host_leases_and_the_next_waits_for_a_release():
    async def go():
        limiter = HostLimiter(per_host=2, ttl=LONG)
        await limiter.acquire("a.org", "1")
        await limiter.acquire("a.org", "2")
        third = asyncio.create_task(limiter.acquire("a.org", "3"))
        other_host = asyncio.create_task(limiter.acquire("b.org", "4"))
        await settle()
        assert not third.done() and other_host.done()
        assert await limiter.held("a.org") == 2
        await limiter.release("a.org", "1")
        await settle()
        assert third.done() and await limiter.held("a.org") == 2

    run(go())


def test_waiting_leases_are_granted_in_the_order_they_asked():
    async def go():
        limiter, granted = HostLimiter(per_host=1, ttl=LONG), []
        await limiter.acquire("a.org", "first")

        async def ask(lease):
            await limiter.acquire("a.org", lease)
            granted.append(lease)

        waiters = [asyncio.create_task(ask(str(i))) for i in range(4)]
        await settle()
        for lease in ["first", "0", "1", "2"]:
            await limiter.release("a.org", lease)
            await settle()
        await asyncio.gather(*waiters)
        assert granted == ["0", "1", "2", "3"]

    run(go())


def test_a_lease_never_released_frees_its_slot_after_its_ttl():
    async def go():
        limiter = HostLimiter(per_host=1, ttl=0.2)
        await limiter.acquire("a.org", "dead-worker")  # its holder dies: no release ever comes
        waiting = asyncio.create_task(limiter.acquire("a.org", "next"))
        await settle()
        assert not waiting.done()
        await waiting  # nobody calls release: the limiter wakes itself when the lease lapses
        assert await limiter.held("a.org") == 1
        await limiter.release("a.org", "dead-worker")  # a late release of the lapsed lease frees nothing
        assert await limiter.held("a.org") == 1
        blocked = asyncio.create_task(limiter.acquire("a.org", "after"))
        await settle()
        assert not blocked.done(), "the lapsed lease's release freed the slot of the lease that replaced it"
        blocked.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await blocked

    run(go())


def test_the_same_lease_asked_twice_holds_one_slot():
    async def go():
        limiter = HostLimiter(per_host=2, ttl=LONG)
        await limiter.acquire("a.org", "1")
        await limiter.acquire("a.org", "1")  # a call retried after its answer was lost
        assert await limiter.held("a.org") == 1

    run(go())


def test_a_cancelled_wait_leaves_the_line_and_idle_hosts_are_forgotten():
    async def go():
        limiter = HostLimiter(per_host=1, ttl=LONG)
        await limiter.acquire("a.org", "1")
        gave_up = asyncio.create_task(limiter.acquire("a.org", "2"))
        await settle()
        gave_up.cancel()
        await settle()
        await limiter.release("a.org", "1")
        assert await limiter.held("a.org") == 0 and limiter._hosts == {}

    run(go())


def test_hosts_spread_over_the_limiters_by_a_hash_that_every_process_agrees_on():
    hosts = [f"img{i}.example.org" for i in range(400)]
    spread = [limiter_for(h, 4) for h in hosts]
    assert all(spread.count(k) > 50 for k in range(4))
    code = f"from common.host_slots import limiter_for; print([limiter_for(h, 4) for h in {hosts!r}])"
    for seed in ("1", "2"):  # str hashes differ between processes; the fetch tasks must agree
        done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                              env={**os.environ, "PYTHONHASHSEED": seed}, check=True)
        assert done.stdout.strip() == str(spread)


def test_a_lease_outlives_the_longest_request_a_fetcher_lets_hold_a_slot():
    fetcher = Fetcher(timeout=10)
    assert lease_ttl(10) > longest_slot_hold(10) >= 3 * 10 + fetcher.deadline


# ---------------------------------------------------------------------------- the Fetcher's seam
def test_the_fetcher_holds_an_injected_slot_for_the_whole_body(image_server):
    events = []

    @contextlib.contextmanager
    def slots(host):
        events.append(("enter", host))
        yield
        events.append(("exit", host))

    url = image_server.add("a.png", sample.png(size=(40, 30)), "image/png")
    fetcher = Fetcher(allow_private_hosts={"127.0.0.1"}, host_slots=slots)
    real_body = fetcher._body
    fetcher._body = lambda response: events.append(("body", None)) or real_body(response)
    assert fetcher.fetch(url).ok
    assert events == [("enter", "127.0.0.1"), ("body", None), ("exit", "127.0.0.1")]


def test_without_ray_the_limiter_module_imports_no_ray():
    code = "import sys, common.host_slots; assert 'ray' not in sys.modules, 'ray was imported'"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


# ---------------------------------------------------------------------------- kept leases (ClusterHostSlots)
class CountingLimiter:
    """Stands in for a limiter actor's handle: records each lease asked for and given back, and
    each `settle` call; `wanted` are the hosts another request waits for."""

    def __init__(self):
        self.asked, self.released, self.settles, self.wanted = [], [], [], set()

        def settle(_, releases, hosts):
            self.settles.append((list(releases), list(hosts)))
            self.released.extend(releases)
            return [h for h in hosts if h in self.wanted]

        self.settle = type("Method", (), {"remote": settle})()


def cluster_slots(monkeypatch, **kwargs):
    from common.fetch import LocalHostSlots
    from common.host_slots import ClusterHostSlots

    limiter = CountingLimiter()
    slots = ClusterHostSlots([limiter], LocalHostSlots(2), **kwargs)
    monkeypatch.setattr(slots, "_acquire", lambda _, host, lease: limiter.asked.append((host, lease)) or True)
    monkeypatch.setattr(slots, "_settle", lambda lim, releases, hosts: lim.settle.remote(releases, hosts))
    return slots, limiter


def wait_for(condition, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.005)
    return condition()


def test_a_fetch_task_reuses_its_lease_for_the_next_request_to_the_same_host(monkeypatch):
    slots, limiter = cluster_slots(monkeypatch, keep_idle=60.0, tick=0.01)
    for _ in range(10):
        with slots("a.org"):
            pass
    with slots("b.org"):
        pass
    time.sleep(0.05)  # a few ticks: nobody waits for a.org or b.org, so both stay kept
    assert [h for h, _ in limiter.asked] == ["a.org", "b.org"] and limiter.released == []
    assert limiter.settles and all(hosts for _, hosts in limiter.settles)  # each tick asked about the kept hosts
    slots.close()  # the task is done: every kept lease goes back
    assert sorted(limiter.released) == sorted(limiter.asked)


def test_requests_at_once_to_one_host_hold_a_lease_each(monkeypatch):
    slots, limiter = cluster_slots(monkeypatch, keep_idle=60.0)
    with slots("a.org"), slots("a.org"):
        pass
    with slots("a.org"), slots("a.org"):  # both kept leases are reused, none asked for
        pass
    assert len(limiter.asked) == 2 and len({lease for _, lease in limiter.asked}) == 2
    slots.close()


def test_a_kept_lease_goes_back_by_itself_once_idle_or_too_old_to_reuse(monkeypatch):
    slots, limiter = cluster_slots(monkeypatch, keep_idle=0.05, tick=0.01)
    with slots("a.org"):
        pass
    assert wait_for(lambda: limiter.released == limiter.asked)  # no request followed: back after 0.05 s
    slots.close()
    old, limiter2 = cluster_slots(monkeypatch, keep_idle=60.0, reuse_for=0.0, tick=0.01)
    with old("a.org"):
        pass
    with old("a.org"):  # past its reuse window: a fresh lease asked for, the old one given back
        pass
    assert len(limiter2.asked) == 2 and wait_for(lambda: len(limiter2.released) == 2)
    old.close()


def test_a_kept_lease_goes_back_at_the_next_tick_once_another_request_waits_for_its_host(monkeypatch):
    slots, limiter = cluster_slots(monkeypatch, keep_idle=60.0, tick=0.01)
    with slots("a.org"):
        pass
    with slots("b.org"):
        pass
    limiter.wanted = {"a.org"}  # another fetch task now waits at the limiter for a.org
    assert wait_for(lambda: [h for h, _ in limiter.released] == ["a.org"])
    time.sleep(0.05)
    assert [h for h, _ in limiter.released] == ["a.org"]  # b.org, wanted by nobody, stays kept
    with slots("a.org"):  # this task's next request to a.org asks again
        pass
    assert [h for h, _ in limiter.asked] == ["a.org", "b.org", "a.org"]
    slots.close()


def test_leases_given_back_go_in_one_call_per_tick(monkeypatch):
    slots, limiter = cluster_slots(monkeypatch, keep_idle=60.0, reuse_for=0.0, tick=60.0)  # the test ticks
    for host in ["a.org", "b.org", "c.org", "a.org"]:
        with slots(host):
            pass
    assert limiter.released == []  # nothing went back one by one
    slots._tick()
    assert len(limiter.settles) == 1 and sorted(limiter.released) == sorted(limiter.asked)
    slots.close()


def test_a_lease_goes_straight_back_when_a_request_of_the_same_task_waits_for_that_host(monkeypatch):
    import threading

    slots, limiter = cluster_slots(monkeypatch, keep_idle=60.0, tick=60.0)
    asking, answer = threading.Event(), threading.Event()

    def slow_acquire(_, host, lease):  # the limiter has no free slot until the lease below comes back
        limiter.asked.append((host, lease))
        asking.set()
        return answer.wait(5)

    with slots("a.org"):
        monkeypatch.setattr(slots, "_acquire", slow_acquire)
        second = threading.Thread(target=lambda: slots("a.org").__enter__())
        second.start()
        assert asking.wait(5)
    assert len(limiter.released) == 1  # not kept for later, nor left for a tick: the waiting request needs it now
    answer.set()
    second.join(5)
    slots.close()


def test_settle_ends_leases_and_names_the_kept_hosts_someone_waits_for():
    async def go():
        limiter = HostLimiter(per_host=1, ttl=LONG)
        await limiter.acquire("a.org", "mine-a")
        await limiter.acquire("b.org", "mine-b")
        await limiter.acquire("c.org", "done-c")
        other = asyncio.create_task(limiter.acquire("a.org", "other-a"))
        await settle()
        wanted = await limiter.settle([("c.org", "done-c")], ["a.org", "b.org", "z.org"])
        assert wanted == ["a.org"] and await limiter.held("c.org") == 0
        assert not other.done()
        assert await limiter.settle([("a.org", "mine-a")], []) == []
        await settle()
        assert other.done() and await limiter.held("a.org") == 1

    run(go())
