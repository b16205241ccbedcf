"""FLEET_STREAM_REPLICAS: validated in Settings, applied to every stream and KV bucket
(on one server at R1, and on a three-node loopback cluster at R3)."""

from __future__ import annotations

import msgspec
import nats
import pytest

from fleet_local.nats_cluster import NatsCluster, wait_for_jetstream
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
    assert len(buckets) == 5 and {c.replicas for c in buckets} == {3}


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
        assert len(counts) == 13 and set(counts.values()) == {1}
    finally:
        await nc.close()


@pytest.fixture
def nats_cluster(tmp_path):
    """Three clustered nats-servers with JetStream on loopback; yields their client URLs."""
    servers = NatsCluster(tmp_path, 3)
    try:
        servers.start()
        yield [node.url for node in servers.nodes]
    finally:
        servers.stop()


@pytest.mark.anyio
@pytest.mark.integration
async def test_a_three_node_cluster_gets_r3_streams_and_buckets(nats_cluster):
    subjects = Subjects("r3")
    settings = Settings.from_env({"NATS_URL": ",".join(nats_cluster), "FLEET_STREAM_REPLICAS": "3"})
    nc = await bus.connect(settings, name="test-replicas")
    try:
        js = nc.jetstream()
        await wait_for_jetstream(nc)
        # a bucket made before the fleet asked for R3 (an older deployment): re-replicated
        await js.create_key_value(bucket=subjects.health_bucket, history=1, replicas=1)
        await bus.ensure_streams(js, subjects, settings)
        counts = await replica_counts(js, subjects, settings)
        assert len(counts) == 13 and set(counts.values()) == {3}, counts
        info = await js.stream_info(subjects.jobs_stream)
        assert info.cluster is not None and len(info.cluster.replicas or []) == 2  # a leader and two followers
    finally:
        await nc.close()


def test_a_result_retention_shorter_than_the_dedup_window_is_refused_at_start():
    """JetStream refuses a stream whose max age is below its duplicate window (120 s): the
    setting says so at start-up instead of every service failing to create RESULTS."""
    from fleet_shared.bus import DEDUP_WINDOW_S

    with pytest.raises(msgspec.ValidationError, match=r"\$\.result_max_age_s"):
        Settings.from_env({"FLEET_RESULT_MAX_AGE_S": str(DEDUP_WINDOW_S - 1)})
    assert Settings.from_env({"FLEET_RESULT_MAX_AGE_S": str(DEDUP_WINDOW_S)}).result_max_age_s == DEDUP_WINDOW_S
