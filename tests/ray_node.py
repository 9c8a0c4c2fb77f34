"""One Ray worker node on 127.0.0.1 that joins the cluster whose GCS is at argv[1], for the cluster tests.

`ray start --address 127.0.0.1:PORT` would rewrite 127.0.0.1 to the machine's network address
before it connects (Ray does that so that other machines can reach the node), so on one machine
with loopback only a worker node is started here the way `ray start` starts it after that step:
a ray._private.node.Node with the GCS address as given. It prints its node id, then keeps the
node until it gets SIGTERM (its processes are stopped) or SIGKILL (they die with the node's
raylet, as when a machine goes away).

    python tests/ray_node.py 127.0.0.1:PORT NUM_CPUS
"""
from __future__ import annotations

import json
import os
import signal
import sys
import threading

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # this node's processes stay on loopback

from ray._private.node import Node  # noqa: E402
from ray._private.parameter import RayParams  # noqa: E402
from ray._private.services import wait_for_node  # noqa: E402

LOOPBACK = "127.0.0.1"


def start(gcs_address: str, num_cpus: int) -> Node:
    params = RayParams(gcs_address=gcs_address, node_ip_address=LOOPBACK, num_cpus=num_cpus, num_gpus=0,
                       object_store_memory=150 * 1024 * 1024, min_worker_port=0, max_worker_port=0,
                       node_manager_port=0, include_log_monitor=False)  # the head's log monitor reads this machine's logs
    params.dashboard_agent_listen_port = None  # a free port, not the head's
    node = Node(params, head=False, shutdown_at_exit=False, spawn_reaper=False)
    wait_for_node(gcs_address, node.plasma_store_socket_name, timeout=60)  # registered with the GCS, alive
    return node


def main(argv: list[str]) -> int:
    node = start(argv[0], int(argv[1]))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(json.dumps({"node_id": node.node_id}), flush=True)
    stop.wait()
    node.kill_all_processes(check_alive=False, allow_graceful=True, wait=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
