"""A NATS JetStream cluster on loopback: ``make up NODES=3`` and the cluster tests."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import nats

from fleet_local.embedded import ClusterRoutes, NatsServer, free_port
from fleet_local.probes import nats_connect
from fleet_local.procs import RunDir, write_pid


class NatsCluster:
    """``size`` clustered nats-servers with JetStream on loopback (``make up NODES=3``, the
    cluster tests): node ``i`` is named ``n<i>`` (from 1), stores under ``root/n<i>``
    and logs to ``log_dir/nats-<i>.log``.

    A node can be killed and started again (``nodes[i].kill()``, ``nodes[i].start()``): it
    comes back on the same ports with the same store and catches up with the others.
    """

    def __init__(
        self,
        root: str | Path,
        size: int = 3,
        *,
        ports: list[int] | None = None,
        route_ports: list[int] | None = None,
        log_dir: str | Path | None = None,
    ) -> None:
        root = Path(root)
        ports = ports or [free_port() for _ in range(size)]
        routes = tuple(route_ports or [free_port() for _ in range(size)])
        self.nodes = []
        for i in range(size):
            name = f"n{i + 1}"
            routes_of_node = ClusterRoutes(name, routes[i], routes)
            log_file = Path(log_dir or root) / f"nats-{i + 1}.log"
            self.nodes.append(NatsServer(root / name, ports[i], log_file, cluster=routes_of_node))

    @property
    def url(self) -> str:
        """Every node's client URL, comma-separated (as NATS_URL takes them)."""
        return ",".join(node.url for node in self.nodes)

    def node_named(self, server_name: str) -> NatsServer:
        return next(n for n in self.nodes if n.cluster is not None and n.cluster.server_name == server_name)

    def start(self, *, detach: bool = False) -> NatsCluster:
        for node in self.nodes:  # routes form once the next nodes listen
            node.start(detach=detach)
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


async def wait_for_jetstream(nc: nats.NATS, timeout_s: float = 30.0) -> None:
    """Until JetStream answers through ``nc``: a new cluster first elects its meta leader,
    and until then every JetStream API call fails (bounded poll)."""
    js = nc.jetstream(timeout=2)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            await js.account_info()
            return
        except (TimeoutError, OSError, nats.errors.Error):
            if time.monotonic() > deadline:
                raise TimeoutError(f"JetStream did not answer within {timeout_s:.0f}s") from None
            await asyncio.sleep(0.1)


async def start_detached_cluster(run: RunDir, nodes: int, *, first_port: int) -> str:
    """`make up NODES=N`: N nodes outliving `up` (pid files ``nats-1`` .. ``nats-N``, logs
    beside the fleet's), the first on ``first_port``; returns NATS_URL once JetStream answers
    (the meta leader is elected before a service asks for its streams)."""
    ports = [first_port] + [free_port() for _ in range(nodes - 1)]
    servers = NatsCluster(run.root / "nats", nodes, ports=ports, log_dir=run.root / "logs")
    for i, node in enumerate(servers.nodes, 1):
        node.start(detach=True)
        write_pid(run, f"nats-{i}", node.pid, port=node.port)
    nc = await nats_connect(servers.url)
    try:
        await wait_for_jetstream(nc)
    finally:
        await nc.close()
    return servers.url
