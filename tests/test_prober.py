"""Health without cost: the lease, the prober's verdicts, cooldown and ramp, LM Studio's load
state and dynamic loading. Real nats-server (KV) and emulators; no completion calls."""

from __future__ import annotations

import httpx
import msgspec
import nats
import pytest

from fleet_emulators import emulator_server
from fleet_router.policy import IntelligentModelRouter, LiveState, admitted
from fleet_router.state import LiveStateTracker
from fleet_shared import availability as av
from fleet_shared.availability import HealthBoard, merge
from fleet_shared.config import ProviderEndpoint, Secret, Settings
from fleet_shared.kv import Lease, open_bucket
from fleet_shared.registry import load_registry
from fleet_shared.schema import Job, TaskType
from fleet_workers.lmstudio import LMStudioLoader
from fleet_workers.prober import Prober

T = 1_000_000.0
KEY = "sk-probe-test-9f8e7d6c5b4a"


# -- pure: phases, merging, ramp admission -------------------------------------------------


def test_cooldown_then_ramp_then_up():
    state = av.cooldown("overloaded", 10, ramp_s=20, now=T)
    assert [state.phase(T + dt) for dt in (0, 9.9, 10, 29.9, 30)] == ["cooling", "cooling", "ramping", "ramping", "up"]
    assert [state.admitted_share(T + dt) for dt in (5, 10, 20, 30)] == [0.0, 0.0, 0.5, 1.0]


def test_merge_never_shortens_a_cooldown_or_ends_a_provider_wait_early():
    long = av.cooldown("rate_limited", 60, ramp_s=5, now=T)
    assert merge(long, av.cooldown("overloaded", 5, ramp_s=5, now=T), T) is None
    assert merge(long, av.recovering(ramp_s=5, now=T), T) is None  # a probe does not cut a 429 short
    assert merge(long, av.cooldown("rate_limited", 90, ramp_s=5, now=T), T).until == T + 90
    rejected = av.down("auth", key_fingerprint="abc", now=T)
    assert merge(rejected, av.cooldown("rate_limited", 1, ramp_s=5, now=T), T) is None
    assert merge(rejected, av.recovering(ramp_s=5, now=T), T).phase(T + 1) == "ramping"
    assert merge(None, av.UP, T) is None and merge(None, long, T) == long


def test_ramp_admission_is_deterministic_and_grows():
    jobs = [f"job-{i}" for i in range(2000)]
    shares = [sum(admitted(j, "openai", f) for j in jobs) / len(jobs) for f in (0.0, 0.25, 0.5, 1.0)]
    assert shares[0] == 0.0 and shares[-1] == 1.0
    assert 0.2 < shares[1] < 0.3 and 0.45 < shares[2] < 0.55
    assert all(admitted(j, "openai", 0.5) == admitted(j, "openai", 0.5) for j in jobs[:50])
    # a job admitted at 25% stays admitted as the share grows
    assert all(admitted(j, "openai", 0.5) for j in jobs if admitted(j, "openai", 0.25))


def test_policy_skips_a_ramping_model_for_jobs_it_does_not_admit_but_never_strands_a_job():
    router = IntelligentModelRouter(load_registry())
    job = Job(prompt="complete this", task_type=TaskType.COMPLETION, complexity=5)
    chosen = {router.route(job, state=LiveState(ramp={"openai": 0.3}), job_id=f"j{i}").model.id for i in range(200)}
    assert chosen == {"openai", "local_mlx"}
    alone = LiveState(ramp={"openai": 0.0}, unavailable=frozenset(set(router.registry.models) - {"openai"}))
    assert router.route(job, state=alone, job_id="j1").model.id == "openai"


def test_tracker_reads_the_board():
    board = HealthBoard(kv=None)
    board.models = {"claude": av.down("auth", now=T), "openai": av.cooldown("overloaded", 10, ramp_s=10, now=T)}
    tracker = LiveStateTracker(board=board)
    assert tracker.snapshot(now=T + 1).unavailable == {"claude", "openai"}
    later = tracker.snapshot(now=T + 15)
    assert later.unavailable == {"claude"} and later.ramp == {"openai": pytest.approx(0.5)}
    assert tracker.snapshot(now=T + 25).ramp == {}


# -- the lease ---------------------------------------------------------------------------


@pytest.fixture
async def js(nats_url):
    nc = await nats.connect(nats_url)
    yield nc.jetstream()
    await nc.drain()


@pytest.mark.anyio
async def test_one_lease_holder_and_takeover_when_stale(js, subjects):
    kv = await open_bucket(js, subjects.leases_bucket)
    first, second = Lease(kv, "prober.x", ttl_s=10, holder="a"), Lease(kv, "prober.x", ttl_s=10, holder="b")
    assert await first.acquire(now=T) and not await second.acquire(now=T + 1)
    assert await first.acquire(now=T + 5)  # renewed
    assert not await second.acquire(now=T + 14)
    assert await second.acquire(now=T + 16) and not await first.acquire(now=T + 17)  # first went quiet
    await second.release()
    assert await first.acquire(now=T + 18)


# -- the prober against emulators ----------------------------------------------------------


async def probe(js, subjects, provider, url, *, key=KEY, settings=None, models=None):
    settings = settings or Settings.from_env({}, ramp_s=10.0)
    board = await HealthBoard.open(js, subjects.health_bucket)
    await board.watch()  # as in a worker: the prober reads its last verdicts from the board
    lease = Lease(await open_bucket(js, subjects.leases_bucket), f"prober.{provider}", ttl_s=30)
    endpoint = ProviderEndpoint(provider, url, Secret(key) if key else None)
    prober = Prober(provider, endpoint, httpx.AsyncClient(timeout=5), board, lease, load_registry(), settings)
    await prober.probe_once()
    await prober.client.aclose()
    await board.stop()
    return board


@pytest.mark.anyio
@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini", "lmstudio"])
async def test_probe_lists_models_only(js, subjects, provider):
    async with emulator_server(provider) as handle:
        board = await probe(js, subjects, provider, handle.url)
    assert handle.emulator.calls["chat"] == 0 and handle.emulator.calls["models"] == 1
    models = [m for m in load_registry().models.values() if m.provider == provider]
    assert [(await board.read(m.id)).state for m in models] == ["up"] * len(models)


@pytest.mark.anyio
@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
async def test_probe_with_a_rejected_key_marks_models_down_then_recovery_ramps(js, subjects, provider):
    model = {"openai": "openai", "anthropic": "claude", "gemini": "gemini"}[provider]
    async with emulator_server(provider) as handle:
        board = await probe(js, subjects, provider, handle.url, key="bad-key-123456")
        state = await board.read(model)
        assert (state.state, state.reason) == ("down", "auth")
        assert state.key_fingerprint == Secret("bad-key-123456").fingerprint()
        board = await probe(js, subjects, provider, handle.url)  # the key was fixed
    assert (await board.read(model)).reason == "recovering"


@pytest.mark.anyio
async def test_unreachable_provider_cools_down_longer_each_time(js, subjects):
    async with emulator_server("openai") as handle:
        url = handle.url
    settings = Settings.from_env({}, cooldown_s=2.0, ramp_s=5.0)
    waits = []
    for _ in range(3):
        board = await probe(js, subjects, "openai", url, settings=settings)
        state = await board.read("openai")
        waits.append(round(state.until - state.at))
    assert waits == [2, 4, 8] and state.reason == "probe_failed"


@pytest.mark.anyio
@pytest.mark.parametrize(("jit", "expected"), [(False, "down"), (True, "up")])
async def test_lmstudio_not_loaded_model_is_routable_only_with_jit(js, subjects, jit, expected):
    async with emulator_server("lmstudio", loaded=["qwen/qwen3-30b-a3b-2507"], jit=False) as handle:
        board = await probe(js, subjects, "lmstudio", handle.url, settings=Settings.from_env({}, lmstudio_jit=jit))
    assert (await board.read("local_mlx")).state == "up"
    devstral = await board.read("local_devstral")
    assert devstral.state == expected and (expected == "up" or devstral.reason == "not_loaded")
    assert handle.emulator.calls["native_models"] == 1


@pytest.mark.anyio
async def test_lmstudio_loads_on_demand_and_unloads_when_idle():
    async with emulator_server("lmstudio", loaded=[], jit=False) as handle:
        settings = Settings.from_env({}, lmstudio_autoload=True, lmstudio_idle_unload_s=60)
        loader = LMStudioLoader(ProviderEndpoint("lmstudio", handle.url, None), httpx.AsyncClient(timeout=5), settings)
        await loader.ensure_loaded("mistralai/devstral-small-2507")
        await loader.ensure_loaded("mistralai/devstral-small-2507")  # known loaded: no second load
        assert list(handle.emulator.loaded) == ["mistralai/devstral-small-2507"]
        assert handle.emulator.calls["load"] == 1
        assert await loader.unload_idle(now=10**10) == ["mistralai/devstral-small-2507"]
        await loader.client.aclose()
    assert handle.emulator.loaded == {} and handle.emulator.calls["unload"] == 1


@pytest.mark.anyio
async def test_lmstudio_jit_first_call_loads_the_model():
    from fleet_shared.schema import ChatMessage
    from fleet_workers.providers import ProviderRequest, make_adapter

    async with emulator_server("lmstudio", loaded=[], jit=True) as handle:
        adapter = make_adapter("lmstudio", ProviderEndpoint("lmstudio", handle.url, None), httpx.AsyncClient(timeout=5))
        reply = await adapter.call(
            ProviderRequest(model="mistralai/devstral-small-2507", messages=[ChatMessage("user", "hi")])
        )
        await adapter.aclose()
    assert reply.content and handle.emulator.calls["jit_load"] == 1


def test_availability_round_trips_as_small_json():
    state = av.cooldown("rate_limited", 2, ramp_s=30, now=T)
    data = msgspec.json.encode(state)
    assert b"key_fingerprint" not in data and msgspec.json.decode(data, type=av.Availability) == state
