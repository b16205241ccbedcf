"""Security: credentials come from the environment or secret files and never show up
anywhere else; NATS credentials work for every service; SQL is parameterised; the ledger
can keep a hash of each prompt instead of its text."""

from __future__ import annotations

import ast
import asyncio
import hashlib
import json
import os
import subprocess
import sys
import uuid
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import msgspec
import nats
import pytest

from fleet_ledger.service import Ledger
from fleet_local.demo import connect_client
from fleet_local.embedded import free_port, nats_server_binary, wait_for_port
from fleet_router.service import Router
from fleet_shared import bus
from fleet_shared.config import Settings, provider_endpoint
from fleet_shared.schema import Decision, encode
from tests.chaos.fleet import ChaosFleet
from tests.chaos.load import JobSpec, Outcome, collect, send_all, wait_for_ledger, wait_for_results
from tests.nats_jwt import operator_setup

REPO = Path(__file__).resolve().parents[1]


# -- secrets from the environment or from files ---------------------------------------------


def test_keys_come_from_the_variable_or_its_file_and_never_print(tmp_path):
    secret_file = tmp_path / "openai.key"
    secret_file.write_text("sk-from-a-file\n")
    from_file = provider_endpoint("openai", {"OPENAI_API_KEY_FILE": str(secret_file)})
    assert from_file.api_key.reveal() == "sk-from-a-file"
    direct = provider_endpoint("openai", {"OPENAI_API_KEY": "sk-direct", "OPENAI_API_KEY_FILE": str(secret_file)})
    assert direct.api_key.reveal() == "sk-direct"  # the variable wins over the file
    assert provider_endpoint("openai", {}).api_key is None
    (tmp_path / "nats.pass").write_text("hunter2-nats")
    settings = Settings.from_env(
        {"NATS_USER": "fleet", "NATS_PASSWORD_FILE": str(tmp_path / "nats.pass"), "NATS_TOKEN": "tok-secret"}
    )
    assert settings.nats_password.reveal() == "hunter2-nats" and settings.nats_token.reveal() == "tok-secret"
    for text in (repr(settings), str(settings), repr(from_file), f"{settings.nats_password}"):
        assert "hunter2" not in text and "tok-secret" not in text and "sk-from-a-file" not in text


# -- NATS credentials --------------------------------------------------------------------------


@contextmanager
def nats_with(tmp_path: Path, auth: str):
    """A private nats-server (JetStream) started from a config with ``auth`` in it."""
    port = free_port()
    conf = tmp_path / "nats.conf"
    conf.write_text(f'listen: "127.0.0.1:{port}"\njetstream {{ store_dir: "{tmp_path / "js"}" }}\n{auth}\n')
    proc = subprocess.Popen(
        [nats_server_binary(), "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for_port(port, proc=proc)
        yield f"nats://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


async def services_connect(settings: Settings) -> None:
    """Every kind of fleet process connects with these settings (bus.connect)."""
    async with Router(settings):
        pass
    async with Ledger(settings, fetch_timeout_s=0.2):
        pass
    nc = await bus.connect(settings, name="probe")
    try:
        assert nc.is_connected and (await nc.jetstream().account_info()).streams > 0
    finally:
        await nc.close()
    demo = await connect_client(settings.nats_url, settings)  # `make demo` with the same variables
    try:
        assert demo.is_connected
    finally:
        await demo.close()


async def refused(url: str, **options) -> bool:
    try:
        nc = await nats.connect(url, allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=2, **options)
    except Exception:
        return True
    await nc.close()
    return False


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["user_password", "token", "nkey"])
async def test_nats_credentials(tmp_path, database_url, kind):
    env = {"DATABASE_URL": database_url, "FLEET_SUBJECT_PREFIX": f"sec{uuid.uuid4().hex[:6]}"}
    if kind == "user_password":
        auth = 'authorization { user: "fleet", password: "s3cret-pass" }'
        env |= {"NATS_USER": "fleet", "NATS_PASSWORD": "s3cret-pass"}
    elif kind == "token":
        auth = 'authorization { token: "s3cret-token" }'
        env |= {"NATS_TOKEN": "s3cret-token"}
    else:
        nkeys = pytest.importorskip("nkeys")
        seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
        public = nkeys.from_seed(bytearray(seed)).public_key.decode()
        (tmp_path / "user.nk").write_bytes(seed)
        auth = f'authorization {{ users: [ {{ nkey: "{public}" }} ] }}'
        env |= {"NATS_NKEY_SEED": str(tmp_path / "user.nk")}
    with nats_with(tmp_path, auth) as url:
        assert await refused(url)  # without credentials: no entry
        await services_connect(Settings.from_env({**env, "NATS_URL": url}))


@pytest.mark.anyio
async def test_nats_jwt_credentials_file(tmp_path, database_url):
    """Decentralised (operator/JWT) auth: every service signs in with a .creds file from NATS_CREDS."""
    config, creds = operator_setup()
    creds_path = tmp_path / "fleet.creds"
    creds_path.write_text(creds)
    creds_path.chmod(0o600)
    env = {
        "DATABASE_URL": database_url,
        "FLEET_SUBJECT_PREFIX": f"jwt{uuid.uuid4().hex[:6]}",
        "NATS_CREDS": str(creds_path),
    }
    with nats_with(tmp_path, config) as url:
        assert await refused(url)
        await services_connect(Settings.from_env({**env, "NATS_URL": url}))


@pytest.mark.anyio
async def test_nats_over_mutual_tls(tmp_path, database_url):
    certs = make_certificates(tmp_path)
    auth = (
        f'tls {{ cert_file: "{certs["server.pem"]}", key_file: "{certs["server.key"]}", '
        f'ca_file: "{certs["ca.pem"]}", verify: true }}'
    )
    env = {
        "DATABASE_URL": database_url,
        "FLEET_SUBJECT_PREFIX": f"tls{uuid.uuid4().hex[:6]}",
        "NATS_TLS_CA": str(certs["ca.pem"]),
        "NATS_TLS_CERT": str(certs["client.pem"]),
        "NATS_TLS_KEY": str(certs["client.key"]),
    }
    with nats_with(tmp_path, auth) as url:
        assert await refused(url)
        await services_connect(Settings.from_env({**env, "NATS_URL": url}))


def make_certificates(folder: Path) -> dict[str, Path]:
    """A throw-away CA, a server certificate for 127.0.0.1 and a client certificate."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=folder)

    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=fleet-test-ca",
    )
    for name, ext in (
        ("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth"),
        ("client", "extendedKeyUsage=clientAuth"),
    ):
        (folder / f"{name}.ext").write_text(ext + "\n")
        openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            "-subj",
            f"/CN={name}",
        )
        openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.pem",
            "-days",
            "2",
            "-extfile",
            f"{name}.ext",
        )
    return {n: folder / n for n in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")}


# -- a planted key appears nowhere -----------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.integration
@pytest.mark.timeout(180)
async def test_a_planted_key_appears_nowhere(tmp_path, database_url, prefix):
    key = f"sk-PLANTED-{uuid.uuid4().hex}"
    everything = ("router", "ledger", "worker-lmstudio", "worker-openai", "worker-anthropic", "worker-gemini")
    prompts = [
        "plain",
        "[emulate:*:error=401] rejected",
        "[emulate:*:error=500] broken",
        "[emulate:*:error=429] limited",
        "[emulate:*:fault=cut] cut",
        "[emulate:openai:hang] slow",
    ]
    jobs = [
        JobSpec(
            f"leak-{i}-{c}-{uuid.uuid4().hex[:4]}",
            {"prompt": p, "complexity": c, "stream": i % 2 == 0},
            "request" if c == 8 else "submit",
        )
        for i, p in enumerate(prompts)
        for c in (2, 5, 8)
    ]
    for job in jobs:
        job.payload["id"] = job.job_id
    env = {"FLEET_LOG_LEVEL": "DEBUG"}
    async with ChaosFleet(
        tmp_path, database_url, prefix=prefix, subprocesses=everything, env=env, key=key, key_files=True
    ) as fleet:
        traffic: list[bytes] = []

        async def record(msg):
            traffic.append(msg.subject.encode() + msg.data + json.dumps(dict(msg.headers or {})).encode())

        await fleet.nc.subscribe(">", cb=record)
        outcome = Outcome()
        await send_all(fleet, jobs, outcome)
        await wait_for_results(fleet, len(jobs))
        await wait_for_ledger(database_url, [j.job_id for j in jobs])
        await collect(fleet, database_url, jobs, outcome)
        stored = await every_stored_message(fleet)
        logs = fleet.log_text()
    assert any(r.success for r in outcome.results.values()), "the key from the file did not work"
    tables = await every_row(database_url)
    assert traffic and stored and tables and "DEBUG" in logs
    for where, text in (
        ("logs", logs),
        ("NATS traffic", b"\n".join(traffic).decode(errors="replace")),
        ("streams", b"\n".join(stored).decode(errors="replace")),
        ("ledger", tables),
    ):
        assert key not in text, f"the planted key was found in the {where}"
        assert key[-12:] not in text, f"part of the planted key was found in the {where}"


async def every_stored_message(fleet) -> list[bytes]:
    out = []
    for name in await fleet.js.streams_info():
        state = name.state
        for seq in range(state.first_seq, state.last_seq + 1):
            try:
                msg = await fleet.js.get_msg(name.config.name, seq)
            except Exception:  # deleted (acked from a work queue)
                continue
            out.append((msg.data or b"") + json.dumps(msg.headers or {}).encode())
    return out


async def every_row(database_url: str) -> str:
    conn = await asyncpg.connect(database_url)
    try:
        tables = [
            r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        ]
        rows = []
        for table in tables:  # names from the catalog, quoted as identifiers
            ident = '"' + table.replace('"', '""') + '"'
            rows += [json.dumps([str(v) for v in r.values()]) for r in await conn.fetch(f"SELECT * FROM {ident}")]
    finally:
        await conn.close()
    return "\n".join(rows)


# -- SQL and prompts ---------------------------------------------------------------------------

SQL_METHODS = {"execute", "executemany", "fetch", "fetchrow", "fetchval", "prepare", "copy_from_query"}


def test_all_sql_is_parameterised():
    """No query text is built from values with an f-string, % or .format where it is run:
    values go in as $n parameters. (SQL constants may be assembled from other constants.)"""
    # scanned in a fresh interpreter: CPython 3.11.7's parser can trip over state earlier
    # tests leave behind ("AST constructor recursion depth mismatch")
    done = subprocess.run(
        [sys.executable, "-c", "import json, tests.test_security as t; print(json.dumps(t.sql_offenders()))"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(done.stdout) == [], "SQL built from values"


def sql_offenders() -> list[str]:
    offenders = []
    code = ("shared", "services", "client", "deploy/local", "bench")  # every package (see README, Layout)
    for path in [p for folder in code for p in REPO.glob(f"{folder}/**/*.py")]:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in SQL_METHODS:
                if node.args and _built(node.args[0]):
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    return offenders


def _built(arg: ast.expr) -> bool:
    """Whether ``arg`` formats something other than UPPER_CASE constants into the text
    (an identifier in DDL, e.g. a database name, cannot be a parameter)."""
    if isinstance(arg, ast.JoinedStr):
        parts = [v.value for v in arg.values if isinstance(v, ast.FormattedValue)]
        return not all(isinstance(v, ast.Name) and v.id.isupper() for v in parts)
    if isinstance(arg, ast.BinOp) and isinstance(arg.op, (ast.Mod, ast.Add)):
        return True
    return isinstance(arg, ast.Call) and isinstance(arg.func, ast.Attribute) and arg.func.attr == "format"


@pytest.mark.anyio
async def test_the_ledger_can_store_a_hash_instead_of_the_prompt(make_settings, database_url, subjects):
    settings = make_settings(database_url=database_url, ledger_store_prompt="hash")
    job_id, prompt = f"hash-{uuid.uuid4().hex[:8]}", "my confidential prompt \x00 with a NUL"
    nc = await bus.connect(settings, name="test")
    done = asyncio.Event()

    async def on_notice(msg):
        if job_id in msgspec.json.decode(msg.data).get("decision_job_ids", []):
            done.set()

    try:
        await nc.subscribe(subjects.ledger_committed_events, cb=on_notice)
        await bus.ensure_streams(nc.jetstream(), subjects, settings)
        async with Ledger(settings, fetch_timeout_s=0.2):
            decision = Decision(
                job_id=job_id,
                attempt_no=1,
                objective=prompt,
                task_type="completion",
                complexity=5,
                model="openai",
                provider="openai",
                reasoning="test",
            )
            await nc.jetstream().publish(subjects.decision_event, encode(decision))
            await asyncio.wait_for(done.wait(), 20)
    finally:
        await nc.close()
    conn = await asyncpg.connect(database_url)
    try:
        objective = await conn.fetchval("SELECT objective FROM routing_decisions WHERE job_id = $1", job_id)
    finally:
        await conn.close()
    assert objective == "sha256:" + hashlib.sha256(prompt.encode()).hexdigest()
