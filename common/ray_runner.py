"""Ray: how steps 01 and 05 schedule their units of work with `--ray [ADDRESS]`.

The units are the same plain functions the threaded runs call (common/filter_file.py: one source
file -> one part; common/embed_shard.py: one shard -> index + npy); this module only places them.

- Without an address it starts a Ray on this machine that binds and talks on 127.0.0.1 only,
  with no dashboard: an exposed Ray runs code for anyone who can reach it.
- `auto`, HOST:PORT or ray://HOST:10001 joins a cluster. Every node must see the data tree at
  the same path (a shared filesystem); a probe file checks that before any work starts.
- Step 01: one task per source file. The Hugging Face token travels inside the task's argument
  (a `Job`, whose repr leaves it out), never in the runtime environment, which Ray shows.
- Step 05: CPU tasks fetch and store the thumbnails; actors that hold the model (one per GPU,
  or one per node without GPUs) embed each shard from those thumbnails and write it. Limiter
  actors (common/host_slots.py, one per 4 CPUs, at least one per node) hold `--per-host` for
  all the fetch tasks at once.
- Faults: tasks are retried and a killed actor restarts; every write is atomic and a unit
  rewrites the same files, so a retry duplicates nothing and a re-run resumes.

Imported only when --ray is given.
"""
from __future__ import annotations

import math
import os
import secrets
import subprocess
import sys
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

from tqdm import tqdm

from common.cli import UserError

LOOPBACK = "127.0.0.1"
CODE_ROOT = Path(__file__).resolve().parent.parent  # the repository, sent to the workers of a Ray Client job
RETRIES = 3  # attempts after a worker or node dies, per task or actor call
FILE_TASK_CPUS = 1  # CPUs a step-01 file task holds (and the size of its polars thread pool)
PROBE_PREFIX = ".ray-probe-"
PLACEMENT_MEMORY = 1 << 20  # bytes of Ray's `memory` resource a CPU model actor asks for (see _cpu_actor_placement)
# what a driver needs to join a cluster that uses token authentication (Ray >= 2.52) by its address
TOKEN_ENV = "RAY_AUTH_MODE=token and the cluster's token in RAY_AUTH_TOKEN (or ~/.ray/auth_token)"
LIMITER_CONCURRENCY = 100_000  # acquires one limiter may hold waiting: every fetch thread of the cluster
# a slot costs two actor calls: one limiter granted about 300 slots/s on a busy 2-core machine
# (bench/bench_host_slots.py), and a fetch task (one CPU) asks about --workers / latency a second
# (16 / 0.3 s = ~55): a limiter for every 4 fetch tasks keeps the limiters from setting the pace
CPUS_PER_LIMITER = 4


def _ray():
    # read when `ray` is first imported: without it Ray's processes reach each other over the
    # machine's network address even when told to use 127.0.0.1
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    return ray


# ---------------------------------------------------------------------------- connecting
def connect(address: str | None, num_cpus: int | None = None, num_gpus: int | None = None) -> bool:
    """Join `address`, or start a loopback-only Ray here when it is None or "" (with `num_cpus`
    and `num_gpus` when given, else what the machine has). True if this call started or joined
    Ray (and so should shut it down); False if this process already had it."""
    ray = _ray()
    if ray.is_initialized():
        return False
    env = {}
    if address and address.startswith("ray://"):  # a remote client: ship the code with the job
        env = {"working_dir": str(CODE_ROOT), "excludes": [".git", "data", "bench/out", "node_modules", ".venv"]}
    # otherwise Ray puts the script's folder and the working directory on the workers' sys.path:
    # the code is found on this machine, and on nodes that mount it at the same path; no runtime
    # environment also means Ray's pre-started workers serve the first tasks
    try:
        with _entrypoint_redacted(ray):
            if address:
                ray.init(address=address, runtime_env=env or None, log_to_driver=True)
            else:
                # "local": a Ray of its own, even where `ray start` (another user's, perhaps) left
                # an address for ray.init to join
                with _lean_local_start(ray):
                    ray.init(address="local", _node_ip_address=LOOPBACK, include_dashboard=False, num_cpus=num_cpus,
                             num_gpus=num_gpus, runtime_env=env or None, log_to_driver=True)
    except ConnectionError as e:
        if "AuthenticationError" in f"{e} {e.__cause__}":
            raise UserError(f"--ray {address}: the cluster refused to let this run join: it uses Ray's token "
                            f"authentication, so set {TOKEN_ENV} as on its nodes") from None
        raise UserError(f"--ray {address}: no Ray cluster there ({str(e).splitlines()[0][:120]}): start one with "
                        "`ray start --head` and pass its address, or use --ray alone for this machine") from None
    return True


# Ray's head processes that a private, fixed, one-node Ray has no use for: the autoscaler's monitor
# (nothing to scale) and the API server, which with include_dashboard=False serves only usage
# statistics, which ray.init switches off for the Ray it starts. Each is a Python process: seconds
# of imports on a small machine, ray.init waiting for the API server, shutdown for the monitor.
UNNEEDED_LOCAL_PROCESSES = ("start_monitor", "start_api_server")


@contextmanager
def _lean_local_start(ray):
    """Start the local Ray without UNNEEDED_LOCAL_PROCESSES (Ray's own shutdown skips what never
    started, as after `ray start --no-monitor`). A Ray whose internals differ starts in full."""
    node = getattr(getattr(getattr(ray, "_private", None), "node", None), "Node", None)
    saved = {name: vars(node)[name] for name in UNNEEDED_LOCAL_PROCESSES if name in vars(node or object)}
    if len(saved) < len(UNNEEDED_LOCAL_PROCESSES):
        yield
        return
    for name in saved:
        setattr(node, name, lambda self, *args, **kwargs: None)
    try:
        yield
    finally:
        for name, method in saved.items():
            setattr(node, name, method)


def _is_token_flag(name: str) -> bool:
    # argparse also accepts an unambiguous prefix of a flag (--tok)
    return len(name) > 3 and "--token".startswith(name)


def redact_command(argv: list[str]) -> str:
    """The command line with the value of every --token replaced by ***."""
    out, hide = [], False
    for arg in argv:
        name, eq, _ = arg.partition("=")
        if hide:
            out.append("***")
        elif eq and _is_token_flag(name):
            out.append(f"{name}=***")
        else:
            out.append(arg)
        hide = not eq and _is_token_flag(name)
    return subprocess.list2cmdline(out)


@contextmanager
def _entrypoint_redacted(ray):
    """Ray records the driver's command line as the job's entrypoint, which the dashboard and
    `ray list jobs` show: with --token in it, record the line without the token's value."""
    utils = getattr(getattr(ray, "_private", None), "utils", None)
    original = getattr(utils, "get_entrypoint_name", None)
    if original is None:
        if any(_is_token_flag(a.partition("=")[0]) for a in sys.orig_argv):
            raise UserError("this Ray version would record --token in its job list: pass the token through "
                            "HF_TOKEN or `hf auth login` instead")
        yield
        return
    utils.get_entrypoint_name = lambda: redact_command(sys.orig_argv)
    try:
        yield
    finally:
        utils.get_entrypoint_name = original


@contextmanager
def session(address: str | None, data_root: Path):
    """Ray for the length of a step, with the shared-storage check done."""
    started = connect(address)
    try:
        check_shared_storage(data_root)
        yield _ray()
    finally:
        if started:
            _ray().shutdown()


def _enter(cwd: str) -> None:
    """Run in the driver's working directory where this node has it: relative paths mean the same."""
    if os.path.isdir(cwd) and os.getcwd() != cwd:
        os.chdir(cwd)


def unwrap(ray, ref):
    """ray.get, with a user mistake raised in a worker surfacing as the same one-line error."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as e:
        if isinstance(e.cause, UserError):
            raise UserError(str(e.cause)) from None
        raise


# ---------------------------------------------------------------------------- shared storage
def _probe(path: str, token: str) -> str | None:
    """On one node: read the driver's probe, write this node's; None, or what went wrong."""
    import ray

    node = ray.get_runtime_context().get_node_id()
    try:
        if Path(path).read_text() != token:
            return "its probe file holds something else"
        Path(f"{path}.{node}").write_text(token)
        return None
    except OSError as e:
        return f"{type(e).__name__}: {e.strerror or e}"


def check_shared_storage(root: Path) -> None:
    """Every alive node reads a file the driver wrote in the data tree and writes one back."""
    ray = _ray()
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    root = Path(root).absolute()
    root.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(8)
    probe = root / f"{PROBE_PREFIX}{token}"
    probe.write_text(token)
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    task = ray.remote(num_cpus=0, max_retries=0)(_probe)
    try:
        refs = [task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                .remote(str(probe), token) for n in nodes]
        for node, problem in zip(nodes, ray.get(refs)):
            back = Path(f"{probe}.{node['NodeID']}")
            if problem is None and not (back.is_file() and back.read_text() == token):
                problem = "the driver cannot read the file it wrote"
            if problem:
                raise UserError(f"--ray: node {node.get('NodeManagerAddress', '?')} cannot share --data-dir "
                                f"{root} ({problem}): every Ray node must mount the same data folder at the same "
                                "path (a shared filesystem such as NFS), writable")
    finally:
        for path in root.glob(f"{PROBE_PREFIX}{token}*"):
            path.unlink(missing_ok=True)


# ---------------------------------------------------------------------------- step 01
def _hub_endpoint() -> str | None:
    from huggingface_hub import constants

    return constants.ENDPOINT


def _use_hub_endpoint(endpoint: str | None) -> None:
    """Workers read the Hub (or mirror) the driver reads; huggingface_hub fixes it at import."""
    if not endpoint:
        return
    from huggingface_hub import constants

    if constants.ENDPOINT != endpoint:
        constants.ENDPOINT = endpoint
        constants.HUGGINGFACE_CO_URL_TEMPLATE = endpoint + "/{repo_id}/resolve/{revision}/{filename}"


def _file_task(src, job, endpoint: str | None, cwd: str):
    # one task holds one CPU: polars, imported later in this worker, sizes its thread pool to match
    # instead of to the whole node, where every task's pool would compete for the same cores
    os.environ.setdefault("POLARS_MAX_THREADS", str(FILE_TASK_CPUS))
    from common.filter_file import process_file
    from common.sources import prefer_jemalloc

    prefer_jemalloc()  # the Arrow pool a threaded run uses: fewer page faults while streaming
    _enter(cwd)
    if src.repo:
        _use_hub_endpoint(endpoint)
    return process_file(src, job)


def run_files(pending: list, job, address: str | None) -> list:
    """Step 01 on Ray: each file a task; the reports come back to the driver, which sums them."""
    job.tree.root.mkdir(parents=True, exist_ok=True)
    with session(address, job.tree.root) as ray:
        task = ray.remote(num_cpus=FILE_TASK_CPUS, max_retries=RETRIES)(_file_task)
        task = task.options(name="01_file")
        endpoint, cwd = (_hub_endpoint() if any(src.repo for src in pending) else None), os.getcwd()
        refs = [task.remote(src, job, endpoint, cwd) for src in pending]
        return _gather(ray, refs, "01 filter", "file", lambda r: r.rows_written, "matches")


def _gather(ray, refs: list, desc: str, unit: str, measure, what: str) -> list:
    results, left = [], list(refs)
    with tqdm(total=len(refs), desc=desc, unit=unit, disable=not refs) as bar:
        try:
            while left:
                done, left = ray.wait(left, num_returns=1)
                results.append(unwrap(ray, done[0]))
                bar.set_postfix_str(f"{sum(map(measure, results)):,} {what}")
                bar.update(1)
        except BaseException:
            for ref in left:  # Ctrl-C or a fatal error: queued units never start
                ray.cancel(ref, force=True)
            raise
    return results


# ---------------------------------------------------------------------------- step 05
class EmbedActor:
    """A process that holds the model (loaded on first use, again after a restart) and embeds
    whole shards from their stored thumbnails with the same process_shard as a threaded run."""

    def __init__(self, args, tree, model: tuple[str, str | None], device: str, cwd: str, reuse=None):
        _enter(cwd)
        self.args, self.tree, self.model, self.device, self.reuse = args, tree, model, device, reuse
        self.ctx = None

    def _context(self) -> dict:
        if self.ctx is None:
            from common.clip import load_clip
            from common.embed_shard import shard_context

            self.ctx = shard_context(self.args, self.tree, load_clip(*self.model, self.device), self.reuse)
        return self.ctx

    def info(self) -> SimpleNamespace:
        clip = self._context()["clip"]
        return SimpleNamespace(name=clip.name, pretrained=clip.pretrained, dim=clip.dim, device=clip.device,
                               input_size=clip.input_size)

    def embed(self, n: int, table, fetched, *shared) -> Counter:
        """Shard n, whose own ids `fetched` stored; `shared` are the fetches of earlier shards
        that owned some of its ids (their failures count here too, as a threaded run's memo)."""
        from common.embed_shard import process_shard

        failed = {}
        for failures, _ in (*shared, fetched):
            failed.update(failures)
        counts = process_shard(n, table, self._context(), failed)
        for key in ("downloaded", "cached", "failed"):  # the fetch tasks did the downloading
            counts.pop(key, None)
        return counts + fetched[1]

    def call(self, fn):
        return fn(self._context()["clip"])

    def placement(self) -> tuple[str, str, list]:
        """(node id, node address, the GPU ids Ray gave this actor): where the model runs."""
        import ray

        return (ray.get_runtime_context().get_node_id(), ray.util.get_node_ip_address(),
                [str(g) for g in ray.get_gpu_ids()])


def describe_placement(places: list[tuple[str, str, list]]) -> str:
    """One line: how many model actors, on which nodes and GPUs."""
    nodes = {node for node, _, _ in places}
    gpus = [f"GPU {','.join(ids)} on {address}" for _, address, ids in places if ids]
    where = ", ".join(gpus) if gpus else "on the CPU"
    return f"05: {len(places)} model actor(s) on {len(nodes)} node(s), {where}"


def _fetch_task(args, tree, items: dict, input_size: int, cwd: str, limiters: list):
    from common.download_embed import ImageSource
    from common.embed_shard import fetch_thumbnails, make_fetcher
    from common.fetch import LocalHostSlots
    from common.host_slots import ClusterHostSlots

    _enter(cwd)
    slots = ClusterHostSlots(limiters, LocalHostSlots(args.per_host)) if limiters else None
    fetcher = make_fetcher(args, input_size, slots)
    try:
        return fetch_thumbnails(items, ImageSource(tree, fetcher, args.thumb_size, input_size, args.keep_images),
                                args.workers)
    finally:
        fetcher.close()
        if slots is not None:
            slots.close()  # the leases it kept for a next request


def _embedders(ray, args, tree, model, cwd: str, reuse=None) -> list:
    """One actor per GPU of the cluster, or one per node on the CPU."""
    gpus = int(ray.cluster_resources().get("GPU", 0))
    if args.device.startswith("cuda") and not gpus:
        raise UserError("--device cuda: this Ray cluster has no GPU; use --device auto or cpu, or add GPU nodes")
    cls = ray.remote(max_restarts=RETRIES, max_task_retries=RETRIES)(EmbedActor)
    if gpus > 0 and args.device != "cpu":
        return [cls.options(num_gpus=1, num_cpus=1, scheduling_strategy="SPREAD").remote(args, tree, model, "cuda", cwd,
                                                                                         reuse) for _ in range(gpus)]
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    working = [n for n in nodes if n.get("Resources", {}).get("CPU", 0) > 0] or nodes  # not a head kept free of work
    return [cls.options(**_cpu_actor_placement(node)).remote(args, tree, model, "cpu", cwd, reuse) for node in working]


def _cpu_actor_placement(node: dict) -> dict:
    """The model actor of one node, when embedding on the CPU. It holds a CPU only where the node has
    another for the fetch tasks: on a node with one CPU (or a one-CPU Ray) holding it would leave the
    fetches nowhere to run, and the step would wait forever. Ray puts an actor that asks for no
    resource at all on any node, whatever its strategy: PLACEMENT_MEMORY makes it honour the node.
    After the node dies, the actor restarts on another."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    cpus = 1 if node.get("Resources", {}).get("CPU", 0) >= 2 else 0
    return {"num_cpus": cpus, "memory": PLACEMENT_MEMORY,
            "scheduling_strategy": NodeAffinitySchedulingStrategy(node["NodeID"], soft=True)}


def _host_limiters(ray, args) -> list:
    """Per-host limiters, one per CPUS_PER_LIMITER CPUs and at least one per node (hosts spread over
    them by hash): --per-host for the whole run."""
    from common.host_slots import HostLimiter, lease_ttl

    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    count = max(1, nodes, math.ceil(ray.cluster_resources().get("CPU", 1) / CPUS_PER_LIMITER))
    actor = ray.remote(num_cpus=0, max_concurrency=LIMITER_CONCURRENCY, max_restarts=RETRIES,
                       max_task_retries=RETRIES)(HostLimiter)
    return [actor.options(scheduling_strategy="SPREAD").remote(args.per_host, lease_ttl(args.timeout))
            for _ in range(count)]


class _Claims:
    """Which in-flight fetch owns each id. A URL in two shards at once is fetched once, and the
    later shard's embedding waits for that fetch: two writers of one thumbnail would collide."""

    def __init__(self):
        self.owner: dict[str, int] = {}
        self.refs: dict[int, object] = {}
        self.ids: dict[int, list[str]] = {}

    def claim(self, n: int, items: dict[str, str]) -> tuple[dict[str, str], list]:
        """(the ids shard n fetches itself, the fetch refs of earlier shards it shares ids with)."""
        mine = {i: u for i, u in items.items() if i not in self.owner}
        earlier = sorted({self.owner[i] for i in items if i in self.owner})
        self.owner.update(dict.fromkeys(mine, n))
        self.ids[n] = list(mine)
        return mine, [self.refs[m] for m in earlier]

    def release(self, n: int) -> None:
        """Shard n is written, so its fetch is done: its thumbnails are on disk for anyone."""
        for i in self.ids.pop(n, ()):
            if self.owner.get(i) == n:
                del self.owner[i]
        self.refs.pop(n, None)


def run_shards(args, tree, parts: list, todo: list[int], model: tuple[str, str | None], tags_with_model,
               reuse=None):
    """Step 05 on Ray: (counts of this run, the model's description, tags_with_model(clip)'s result).
    `reuse` (common/embedding_reuse.py): ids it knows are neither fetched nor embedded again."""
    from common.embed_shard import shard_items
    from common.embedding_reuse import Reuse

    reuse = reuse or Reuse()

    tree = type(tree)(Path(tree.root).absolute())
    with session(args.ray, tree.root) as ray:
        cwd = os.getcwd()
        actors = _embedders(ray, args, tree, model, cwd, reuse)
        infos = [unwrap(ray, a.info.remote()) for a in actors]  # loads every model now: a bad one fails here
        print(describe_placement(ray.get([a.placement.remote() for a in actors])))
        fetch = ray.remote(num_cpus=1, max_retries=RETRIES)(_fetch_task).options(name="05_fetch")
        in_flight = max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
        run, pending, claims, limiters = Counter(), {}, _Claims(), _host_limiters(ray, args)
        try:
            with tqdm(total=len(todo), desc="05 shards", unit="shard", disable=not todo) as bar:
                for n, table in _wanted_shards(args, parts, todo):
                    mine, shared = claims.claim(n, reuse.unknown(shard_items(table, {})))
                    claims.refs[n] = fetch.remote(args, tree, mine, infos[0].input_size, cwd, limiters)
                    pending[actors[n % len(actors)].embed.remote(n, table, claims.refs[n], *shared)] = n
                    while len(pending) >= in_flight:
                        claims.release(_collect_one(ray, pending, run, bar))
                while pending:
                    claims.release(_collect_one(ray, pending, run, bar))
        finally:
            for limiter in limiters:
                ray.kill(limiter)
        tags = unwrap(ray, actors[0].call.remote(tags_with_model))
        for a in actors:
            ray.kill(a)
    return run, infos[0], tags


def _wanted_shards(args, parts: list, todo: list[int]):
    from common import embedding_shards as shards

    wanted = set(todo)
    return ((n, t) for n, t in shards.iter_input_shards(parts, args.shard_size, args.limit) if n in wanted)


def _collect_one(ray, pending: dict, run: Counter, bar) -> int:
    """Wait for one shard; add its counts to `run`; return its number."""
    try:
        (done,), _ = ray.wait(list(pending), num_returns=1)
        run.update(unwrap(ray, done))
    except BaseException:
        for ref in pending:
            ray.cancel(ref)
        raise
    bar.update(1)
    bar.set_postfix_str(f"{run['downloaded']:,} downloaded, {run['failed']:,} failed")
    return pending.pop(done)
