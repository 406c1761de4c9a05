"""Ray clusters and Ray drivers for the cluster tests, each in a process of its own.

The test process never joins a cluster: Ray ends a driver process whose cluster has been
gone for a minute, and some tests take a cluster away on purpose. Run as a script::

    python cluster_procs.py host [--nodes N] [--cpus C] [--dashboard]
        a real Ray cluster on this machine (ray.cluster_utils.Cluster): a head that runs no
        actor (0 CPUs) and N worker nodes of C CPUs each, each node its own raylet; prints
        one JSON line {"address", "head", "nodes": [node ids]}, then serves until SIGTERM
        or until its standard input closes, and shuts every node down
    python cluster_procs.py kill ADDRESS NAME
        joins, waits for the live actor NAME in a namespace of rt-eda's ("rt-eda-..."),
        asks it its pid and SIGKILLs that process (the actor crashes; Ray restarts it);
        prints {"pid", "namespace", "t_kill"} (t_kill: time.monotonic() of the kill)
    python cluster_procs.py actors ADDRESS
        joins and prints the live actors of rt-eda's namespaces, as Ray's state API lists
        them (`ray list actors`): [{"name", "namespace", "state", "pid"}]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from typing import Any


def _host(args: argparse.Namespace) -> int:
    from ray.cluster_utils import Cluster

    store = 100 * 2**20
    cluster = Cluster(initialize_head=True, connect=False, head_node_args={
        "num_cpus": 0, "object_store_memory": store, "include_dashboard": args.dashboard})
    nodes = [cluster.add_node(num_cpus=args.cpus, object_store_memory=store)
             for _ in range(args.nodes)]
    cluster.wait_for_nodes()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    print(json.dumps({"address": cluster.address, "head": cluster.head_node.node_id,
                      "nodes": [n.node_id for n in nodes]}), flush=True)

    def stdin_closed() -> None:
        sys.stdin.read()
        done.set()

    threading.Thread(target=stdin_closed, daemon=True).start()
    while not done.wait(0.2):
        pass
    cluster.shutdown()
    print(json.dumps({"shutdown": True}), flush=True)
    return 0


def _join(address: str) -> Any:
    import ray

    ray.init(address=address, log_to_driver=False, configure_logging=False,
             namespace="rt-eda-tests")
    return ray


def _kill(args: argparse.Namespace) -> int:
    ray = _join(args.address)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        for entry in ray.util.list_named_actors(all_namespaces=True):
            if entry["name"] == args.name and entry["namespace"].startswith("rt-eda-"):
                actor = ray.get_actor(entry["name"], namespace=entry["namespace"])
                pid = ray.get(actor.ready.remote(), timeout=60).pid
                os.kill(pid, signal.SIGKILL)
                t = time.monotonic()
                print(json.dumps({"pid": pid, "namespace": entry["namespace"], "t_kill": t}),
                      flush=True)
                return 0
        time.sleep(0.2)
    print(json.dumps({"error": f"no actor {args.name} within {args.timeout} s"}), flush=True)
    return 1


def _actors(args: argparse.Namespace) -> int:
    ray = _join(args.address)
    from ray.util.state import list_actors

    live = [a for a in list_actors(filters=[("state", "!=", "DEAD")], limit=10_000)
            if (a.ray_namespace or "").startswith("rt-eda-") and a.ray_namespace != "rt-eda-tests"]
    print(json.dumps([{"name": a.name, "namespace": a.ray_namespace, "state": a.state,
                       "pid": a.pid} for a in live]), flush=True)
    ray.shutdown()
    return 0


def main() -> int:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    h = sub.add_parser("host")
    h.add_argument("--nodes", type=int, default=2)
    h.add_argument("--cpus", type=float, default=2)
    h.add_argument("--dashboard", action="store_true")
    k = sub.add_parser("kill")
    k.add_argument("address")
    k.add_argument("name")
    k.add_argument("--timeout", type=float, default=120)
    a = sub.add_parser("actors")
    a.add_argument("address")
    args = p.parse_args()
    return {"host": _host, "kill": _kill, "actors": _actors}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
