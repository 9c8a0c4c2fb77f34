"""Steps 01 and 05 on a Ray cluster of two nodes on this machine, all on 127.0.0.1: joined by address
and through Ray Client, a node killed mid-run, and nodes that do not see the data tree.

The head is `ray start --head`, as the README starts one, with loopback, a port of its own and token
authentication spelled out. A worker node is tests/ray_node.py: `ray start --address 127.0.0.1:PORT`
would reach the head over the machine's network address. Each node has 1 CPU. One cluster serves the
module; the steps join it with --ray ADDRESS and leave it running. The tests that kill a node come
last and start a new one first.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import psutil
import pytest

from common import ray_runner
from common.paths import DataTree
from sample import images as sample
from sample.relaion import write_relaion_parquet
from tests.conftest import ROOT, missing, polling
from tests.image_server import image_server  # noqa: F401
from tests.test_ray import (_on_loopback, assert_same_shards, error_line, model_dir, parts_of, run01,  # noqa: F401
                            run05, stats_counts, write_input)

LOOPBACK = ray_runner.LOOPBACK
# the GCS marks a node dead after 3 missed health checks 0.5 s apart (Ray's default: 5 x 3 s, after 5 s)
FAST_NODE_DEATH = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500, "health_check_failure_threshold": 3}
STARTED = "Ray runtime started"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def wait_for(check, what: str, timeout: float = 90.0):
    deadline = time.monotonic() + timeout
    while not (found := check()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout:.0f} s for {what}")
        time.sleep(0.1)
    return found


def stop(proc: subprocess.Popen) -> None:
    """Stop a node's process and everything it started."""
    family = []
    with contextlib.suppress(psutil.Error):
        family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    if proc.poll() is None:
        proc.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=30)
    for p in family:
        with contextlib.suppress(psutil.Error):
            p.kill()
    proc.wait()


class Cluster:
    """A head started with `ray start --head --block`, and worker nodes started by tests/ray_node.py."""

    def __init__(self, root: Path):
        self.root = root  # short: Ray's socket paths live under it
        self.port, self.client_port, self.dashboard_port, self.agent_port = (free_port() for _ in range(4))
        self.env = {**os.environ, "RAY_TMPDIR": str(root), "RAY_AUTH_MODE": "token",
                    "RAY_AUTH_TOKEN": secrets.token_hex(32), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
        self.head: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def start_head(self) -> None:
        log = self.root / "head.log"
        with log.open("w") as out:
            self.head = subprocess.Popen(
                [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block", f"--node-ip-address={LOOPBACK}",
                 f"--port={self.port}", f"--ray-client-server-port={self.client_port}", "--num-cpus=1",
                 "--include-dashboard=false", f"--dashboard-port={self.dashboard_port}",
                 f"--dashboard-agent-listen-port={self.agent_port}", "--disable-usage-stats", f"--temp-dir={self.root}",
                 f"--system-config={json.dumps(FAST_NODE_DEATH)}"],
                env=self.env, stdout=out, stderr=subprocess.STDOUT, cwd=self.root)
        wait_for(lambda: STARTED in log.read_text() or self.head.poll() is not None, "the head")
        assert self.head.poll() is None, log.read_text()[-3000:]

    def add_worker(self, *wrapper: str) -> subprocess.Popen:
        """A worker node with 1 CPU; `wrapper` runs it inside another command (a mount namespace)."""
        log = self.root / f"worker{len(self.workers)}.log"
        node = [sys.executable, str(ROOT / "tests" / "ray_node.py"), self.address, "1"]
        with log.open("w") as out:
            proc = subprocess.Popen([*wrapper, *node], env=self.env, stdout=out, stderr=subprocess.STDOUT, cwd=self.root)
        wait_for(lambda: '"node_id"' in log.read_text() or proc.poll() is not None, "a worker node")
        assert proc.poll() is None, log.read_text()[-3000:]
        self.workers.append(proc)
        return proc

    def raylets(self) -> dict[int, str]:
        """{raylet pid: "head" or "worker" + its index}."""
        found = {}
        for name, proc in [("head", self.head), *((f"worker{i}", w) for i, w in enumerate(self.workers))]:
            with contextlib.suppress(psutil.Error):
                found.update({p.pid: name for p in psutil.Process(proc.pid).children(recursive=True)
                              if p.name() == "raylet"})
        return found

    def alive_workers(self) -> list[subprocess.Popen]:
        return [w for w in self.workers if w.poll() is None]

    def kill_node(self, worker: subprocess.Popen) -> None:
        """The node's machine goes away: every process of the node dies at once, without warning."""
        family = [psutil.Process(worker.pid), *psutil.Process(worker.pid).children(recursive=True)]
        for proc in family:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        worker.wait()

    def shutdown(self) -> None:
        for worker in self.workers:
            stop(worker)
        if self.head is not None:
            stop(self.head)


@pytest.fixture(scope="module")
def cluster():
    ray = ray_runner._ray()
    if ray._private.ray_constants.ENABLE_RAY_CLUSTER:  # set before `ray` was first imported, elsewhere
        pytest.fail("ray was imported without RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0: a driver would reach the head "
                    "over the machine's network address")
    if ray._private.utils.get_ray_client_dependency_error() is not None:
        missing("the head's Ray Client server needs ray[client] (grpcio): pip install -r requirements.txt")
    root = Path(tempfile.mkdtemp(prefix="rayc-", dir="/tmp"))
    made = Cluster(root)
    try:
        with driver_env({key: made.env[key] for key in ("RAY_TMPDIR", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}):
            made.start_head()
            made.add_worker()
            yield made
    finally:
        made.shutdown()
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def driver_env(values: dict[str, str]):
    """This process's environment for the steps that join the cluster. Ray reads RAY_AUTH_MODE and the
    token when it is imported (as when a user exports them before a run); this process imported it
    before, so they are read again, as Ray does when it turns token authentication on itself."""
    from ray._raylet import AuthenticationTokenLoader, Config

    def read():
        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()

    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    read()
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        read()


def ensure_worker(cluster: Cluster) -> subprocess.Popen:
    return (cluster.alive_workers() or [cluster.add_worker()])[0]


@contextlib.contextmanager
def watch_nodes(cluster: Cluster, kill=None):
    """Which node ran each kind of Ray worker: {title: {(node, pid)}}, node "head" or "worker0"...
    Ray titles a worker process after the task or actor method it runs (ray::01_file,
    ray::EmbedActor.embed; an idle actor after its class, ray::EmbedActor); its parent is its
    node's raylet. With kill=(worker node, when), that node is killed as soon as when(seen) is true,
    and seen["killed"] is then set."""
    seen, pending = defaultdict(set), [kill]
    raylets = cluster.raylets()

    def look() -> bool:
        for pid, node in raylets.items():
            with contextlib.suppress(psutil.Error):
                for proc in psutil.Process(pid).children():
                    with contextlib.suppress(psutil.Error, IndexError):
                        title = proc.cmdline()[0].split()[0]
                        if title.startswith("ray::"):
                            seen[title].add((node, proc.pid))
        if pending[0] and pending[0][1](seen):
            cluster.kill_node(pending[0][0])
            seen["killed"].add(("worker", pending[0][0].pid))
            pending[0] = None
        return False  # watch until the block ends

    with polling(look, 0.02):
        yield seen


def nodes(seen: dict, title: str) -> set[str]:
    return {node for node, _ in seen[title]}


def alive_nodes(address: str) -> int:
    ray = ray_runner._ray()
    ray.init(address=address, log_to_driver=False)
    try:
        return sum(1 for n in ray.nodes() if n.get("Alive"))
    finally:
        ray.shutdown()


# ---------------------------------------------------------------------------- the cluster
def cluster_sockets(cluster: Cluster) -> list[tuple[str, object]]:
    """(process name, connection) of every inet socket of the cluster's processes."""
    procs = []
    for proc in (cluster.head, *cluster.alive_workers()):
        with contextlib.suppress(psutil.NoSuchProcess):
            procs += [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    sockets = []
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            sockets += [(proc.name(), c) for c in proc.net_connections(kind="inet")]
    return sockets


def beyond_loopback(sockets: list) -> list:
    return [(name, c.laddr, c.raddr) for name, c in sockets
            if not _on_loopback(c.laddr) or (c.raddr and not _on_loopback(c.raddr))]


def test_every_socket_of_the_two_node_cluster_is_on_loopback(cluster):
    assert set(cluster.raylets().values()) == {"head", "worker0"} and alive_nodes(cluster.address) == 2
    sockets = cluster_sockets(cluster)
    assert {"gcs_server", "raylet"} <= {name for name, _ in sockets}
    listening = {c.laddr.port for _, c in sockets if c.status == psutil.CONN_LISTEN}
    assert {cluster.port, cluster.client_port} <= listening  # the GCS and the Ray Client server
    assert beyond_loopback(sockets) == []


# ---------------------------------------------------------------------------- joining by address
def test_01_joining_the_cluster_runs_files_on_both_nodes_writes_what_threads_write_and_leaves_it_up(cluster,
                                                                                                   tmp_path):
    sources = [write_relaion_parquet(tmp_path / f"s{i}.parquet", 20_000, seed=i, rows_per_group=4000)
               for i in range(4)]
    assert run01(tmp_path / "threads", sources) == 0
    with watch_nodes(cluster) as seen:
        assert run01(tmp_path / "ray", sources, "--ray", cluster.address) == 0
    assert nodes(seen, "ray::01_file") == {"head", "worker0"}
    threads, on_ray = parts_of(tmp_path / "threads"), parts_of(tmp_path / "ray")
    assert list(on_ray) == list(threads) == [f"part-0000{i}.parquet" for i in range(4)]
    assert all(on_ray[name].equals(table) for name, table in threads.items())
    assert stats_counts(tmp_path / "ray") == stats_counts(tmp_path / "threads")
    assert not ray_runner._ray().is_initialized()  # the step let go of the cluster...
    assert cluster.head.poll() is None and alive_nodes(cluster.address) == 2  # ...and did not stop it


def test_joining_without_the_clusters_token_is_one_line_that_says_what_is_needed(cluster, tmp_path):
    source = write_relaion_parquet(tmp_path / "s.parquet", 300, seed=1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    env.update(HOME=str(tmp_path), RAY_NUM_REDIS_GET_RETRIES="2")  # no ~/.ray/auth_token; Ray tries twice, not 20 times
    done = subprocess.run([sys.executable, "01_download_and_filter.py", "--data-dir", str(tmp_path / "d"),
                           "--keywords", "Madrid", "--source", str(source), "--ray", cluster.address],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1] == (f"error: --ray {cluster.address}: the cluster refused to let this run "
                                                    f"join: it uses Ray's token authentication, so set "
                                                    f"{ray_runner.TOKEN_ENV} as on its nodes")
    assert "Traceback" not in done.stderr and not (tmp_path / "d" / "metadata").exists()


# ---------------------------------------------------------------------------- Ray Client
def copy_of_repository(dest: Path) -> Path:
    """The repository with what a job must not ship beside it (a data tree, git's folder, benchmark
    output), and no .gitignore: what stays out is what connect() excludes."""
    shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns(".git", "data", "bench", "node_modules", ".venv",
                                                               "__pycache__", ".gitignore", "web"))
    for name in ("data/metadata/part-00000.parquet", ".git/HEAD", "bench/out/run.json", "node_modules/x/index.js"):
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        (dest / name).write_text("must not be shipped")
    return dest


def test_01_through_ray_client_ships_the_code_without_data_or_git_and_writes_what_threads_write(
        cluster, tmp_path, monkeypatch):
    sources = [write_relaion_parquet(tmp_path / f"s{i}.parquet", 3000, seed=i) for i in range(2)]
    assert run01(tmp_path / "threads", sources) == 0
    monkeypatch.setattr(ray_runner, "CODE_ROOT", copy_of_repository(tmp_path / "repo"))
    assert run01(tmp_path / "ray", sources, "--ray", f"ray://{LOOPBACK}:{cluster.client_port}") == 0
    threads, on_ray = parts_of(tmp_path / "threads"), parts_of(tmp_path / "ray")
    assert list(on_ray) == list(threads) and all(on_ray[n].equals(t) for n, t in threads.items())
    assert stats_counts(tmp_path / "ray") == stats_counts(tmp_path / "threads")
    assert beyond_loopback(cluster_sockets(cluster)) == []  # the client's own server process too
    shipped = [p for p in cluster.root.glob("session_*/runtime_resources/working_dir_files/*") if p.is_dir()]
    assert shipped, "no working_dir was unpacked on a node"
    for package in shipped:
        assert (package / "common" / "ray_runner.py").is_file()
        assert [name for name in ("data", ".git", "bench/out", "node_modules") if (package / name).exists()] == []


# ---------------------------------------------------------------------------- shared storage
def test_a_node_that_sees_another_filesystem_at_the_data_path_stops_the_step_with_one_line(cluster, tmp_path,
                                                                                        capsys):
    """A real node whose mount namespace puts an empty filesystem over one data tree (as a node that
    does not mount the shared one) and a copy-on-write layer over another (it reads the driver's
    files, but what it writes stays on its own disk)."""
    if not shutil.which("unshare"):
        missing("needs unshare (util-linux) for a node with a filesystem of its own")
    unmounted, layered, upper, work = (tmp_path / n for n in ("unmounted", "layered", "upper", "work"))
    for folder in (unmounted, layered, upper, work):
        folder.mkdir()
    mounts = (f"mount -t tmpfs tmpfs {unmounted} && mount -t overlay overlay "
              f"-o lowerdir={layered},upperdir={upper},workdir={work} {layered} && exec \"$@\"")
    # without root, a user namespace of its own (-r) lets the node mount (Linux 5.11+ for the overlay)
    namespace = ["unshare", "-m", "--propagation", "private", *(["-r"] if os.geteuid() != 0 else [])]
    probe = subprocess.run([*namespace, "sh", "-c", mounts, "sh", "true"], capture_output=True, text=True)
    if probe.returncode:
        missing(f"cannot make a mount namespace here: {probe.stderr.strip()[:200]}")
    odd = cluster.add_worker(*namespace, "sh", "-c", mounts, "sh")
    try:
        source = write_relaion_parquet(tmp_path / "s.parquet", 300, seed=1)
        lines = []
        for data_dir in (unmounted / "tree", layered / "tree"):
            assert run01(data_dir, [source], "--ray", cluster.address) == 2
            lines.append(error_line(capsys))
            assert not list(data_dir.glob(f"{ray_runner.PROBE_PREFIX}*")), "a probe file was left behind"
            assert not (data_dir / "metadata").exists()
    finally:
        stop(odd)
    assert "FileNotFoundError" in lines[0] and "the driver cannot read the file it wrote" in lines[1]
    for line, data_dir in zip(lines, (unmounted, layered)):
        assert line.startswith(f"error: --ray: node {LOOPBACK} cannot share --data-dir {data_dir / 'tree'} (")
        assert "every Ray node must mount the same data folder at the same path" in line


# ---------------------------------------------------------------------------- a node dies
def test_01_a_node_killed_mid_file_costs_nothing(cluster, tmp_path):
    worker = ensure_worker(cluster)
    sources = [write_relaion_parquet(tmp_path / f"s{i}.parquet", 60_000, seed=i, rows_per_group=5000)
               for i in range(3)]
    assert run01(tmp_path / "threads", sources) == 0
    with watch_nodes(cluster, kill=(worker, lambda seen: nodes(seen, "ray::01_file") - {"head"})) as seen:
        assert run01(tmp_path / "ray", sources, "--ray", cluster.address) == 0
    assert seen["killed"], "the worker node ran no file: the test did not test anything"
    assert worker.poll() is not None  # the node's processes are gone; Ray marks it dead once its heartbeats stop
    deadline = time.monotonic() + 90
    while alive_nodes(cluster.address) != 1 and time.monotonic() < deadline:
        time.sleep(1)
    assert alive_nodes(cluster.address) == 1
    threads, on_ray = parts_of(tmp_path / "threads"), parts_of(tmp_path / "ray")
    assert list(on_ray) == list(threads) and all(on_ray[n].equals(t) for n, t in threads.items())
    assert stats_counts(tmp_path / "ray") == stats_counts(tmp_path / "threads")
    assert not list((tmp_path / "ray" / "metadata").glob("*.tmp"))


def test_05_on_the_cluster_puts_a_model_actor_on_each_node_and_a_node_killed_mid_run_costs_nothing(
        cluster, image_server, model_dir, tmp_path):
    """Each node has 1 CPU, so its actor holds none (the fetch tasks need them). The worker node dies
    once downloads are under way, with shards still routed to its actor: the actor restarts on the
    head and the shards are what threads write."""
    worker = ensure_worker(cluster)
    name = next(n for n, w in ((f"worker{i}", w) for i, w in enumerate(cluster.workers)) if w is worker)
    good = [image_server.add(f"c{i}.png", sample.png(size=(40 + i, 30)), "image/png") for i in range(8)]
    urls = [*good, image_server.url("/status/404"), image_server.url("/html"), None, good[0], good[5],
            *(image_server.url(f"/hold/{i}") for i in range(17))]
    threads, on_ray = DataTree(tmp_path / "threads"), DataTree(tmp_path / "ray")
    for tree in (threads, on_ray):
        write_input(tree, urls)
    assert run05(threads, model_dir, "--shard-size", "4") == 0
    held = len(image_server.hits("/hold/"))

    def under_way(seen) -> bool:  # the worker's actor is up and the first held downloads are done
        return name in nodes(seen, "ray::EmbedActor") and len(image_server.hits("/hold/")) >= held + 4

    with watch_nodes(cluster, kill=(worker, under_way)) as seen:
        assert run05(on_ray, model_dir, "--shard-size", "4", "--ray", cluster.address) == 0
    assert seen["killed"], "the worker node was not killed mid-run: the test did not test anything"
    assert nodes(seen, "ray::EmbedActor") == {"head", name}
    # the shards routed to the dead node's actor were written below: that actor restarted on the head
    # (its new process is not always caught by the sampling, so its pid is not counted here)
    assert_same_shards(threads, on_ray)
    assert not list(on_ray.embeddings.glob("*.tmp"))
    doc = json.loads((on_ray.embeddings / "_stats.json").read_text())
    assert doc["statuses"] == json.loads((threads.embeddings / "_stats.json").read_text())["statuses"]
    assert on_ray.tags_file.exists()
