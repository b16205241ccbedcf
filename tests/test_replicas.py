"""FLEET_STREAM_REPLICAS: validated in Settings, applied to every stream and KV bucket
(on one server at R1, and on a three-node loopback cluster at R3)."""

from __future__ import annotations

import asyncio
import subprocess
import time

import msgspec
import nats
import pytest

from fleet_local.embedded import free_port, nats_server_binary, wait_for_port
from fleet_shared import bus
from fleet_shared.config import Settings
from fleet_shared.subjects import Subjects

# -- pure ------------------------------------------------------------------------------


@pytest.mark.parametrize("replicas", ["1", "3", "5"])
def test_replicas_from_the_environment(replicas):
    assert Settings.from_env({"FLEET_STREAM_REPLICAS": replicas}).stream_replicas == int(replicas)


def test_one_replica_by_default():
    assert Settings.from_env({}).stream_replicas == 1


@pytest.mark.parametrize("replicas", ["0", "6", "-1"])
def test_replicas_outside_what_jetstream_allows_are_refused(replicas):
    with pytest.raises(msgspec.ValidationError, match=r"\$\.stream_replicas"):
        Settings.from_env({"FLEET_STREAM_REPLICAS": replicas})


def test_every_stream_and_bucket_takes_the_replica_count():
    settings = Settings.from_env({"FLEET_STREAM_REPLICAS": "3"})
    streams = bus.stream_configs(Subjects("x"), settings)
    buckets = bus.bucket_configs(Subjects("x"), settings)
    assert len(streams) == 8 and {c.num_replicas for c in streams} == {3}
    assert len(buckets) == 4 and {c.replicas for c in buckets} == {3}


# -- integration -------------------------------------------------------------------------


async def replica_counts(js, subjects: Subjects, settings: Settings) -> dict[str, int]:
    names = [c.name for c in bus.stream_configs(subjects, settings)]
    names += [f"KV_{c.bucket}" for c in bus.bucket_configs(subjects, settings)]
    return {name: (await js.stream_info(name)).config.num_replicas for name in names}


@pytest.mark.anyio
async def test_one_server_gets_single_replica_streams_and_buckets(make_settings, subjects):
    settings = make_settings()
    nc = await nats.connect(settings.nats_url)
    try:
        js = nc.jetstream()
        await bus.ensure_streams(js, subjects, settings)
        await bus.ensure_streams(js, subjects, settings)  # a second process starting: no change
        counts = await replica_counts(js, subjects, settings)
        assert len(counts) == 12 and set(counts.values()) == {1}
    finally:
        await nc.close()


@pytest.fixture
def nats_cluster(tmp_path):
    """Three clustered nats-servers with JetStream on loopback; yields their client URLs."""
    client_ports = [free_port() for _ in range(3)]
    route_ports = [free_port() for _ in range(3)]
    routes = ", ".join(f"nats-route://127.0.0.1:{p}" for p in route_ports)
    procs = []
    try:
        for i in range(3):
            conf = tmp_path / f"n{i}.conf"
            conf.write_text(
                f"server_name: n{i}\nlisten: 127.0.0.1:{client_ports[i]}\n"
                f"jetstream {{ store_dir: '{tmp_path / f'js{i}'}' }}\n"
                f"cluster {{ name: fleet, listen: 127.0.0.1:{route_ports[i]}, routes: [{routes}] }}\n"
            )
            log = open(tmp_path / f"n{i}.log", "wb")  # noqa: SIM115 - closed with the process
            procs.append((subprocess.Popen([nats_server_binary(), "-c", str(conf)], stdout=log, stderr=log), log))
        for port, (proc, _) in zip(client_ports, procs):
            wait_for_port(port, proc=proc)
        yield [f"nats://127.0.0.1:{p}" for p in client_ports]
    finally:
        for proc, log in procs:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()


async def jetstream_ready(js, timeout_s: float = 30.0) -> None:
    """Until the cluster has elected its JetStream meta leader (bounded)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            await js.account_info()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


@pytest.mark.anyio
@pytest.mark.integration
async def test_a_three_node_cluster_gets_r3_streams_and_buckets(nats_cluster):
    subjects = Subjects("r3")
    settings = Settings.from_env({"NATS_URL": ",".join(nats_cluster), "FLEET_STREAM_REPLICAS": "3"})
    nc = await bus.connect(settings, name="test-replicas")
    try:
        js = nc.jetstream()
        await jetstream_ready(js)
        # a bucket made before the fleet asked for R3 (an older deployment): re-replicated
        await js.create_key_value(bucket=subjects.health_bucket, history=1, replicas=1)
        await bus.ensure_streams(js, subjects, settings)
        counts = await replica_counts(js, subjects, settings)
        assert len(counts) == 12 and set(counts.values()) == {3}, counts
        info = await js.stream_info(subjects.jobs_stream)
        assert info.cluster is not None and len(info.cluster.replicas or []) == 2  # a leader and two followers
    finally:
        await nc.close()
