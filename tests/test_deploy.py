"""deploy/ read as data: every file parses, and the pieces agree with each other and with the
code (pure: no Docker, Kubernetes or Prometheus here; docs/operate.md lists what was run
with those tools and where).

Cross-references checked: every fleet service has a scrape target and a health check;
every metric and label an alert or a dashboard panel reads is in the metrics catalogue;
every environment variable the deployments set is one the services read; each image
installs only its own slice of the lock; the Helm chart's NATS, replica and KEDA settings
match the code's stream and consumer names.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from fleet_shared import labels as L
from fleet_shared.config import Settings
from fleet_shared.metrics import CATALOGUE
from fleet_shared.registry import PROVIDER_ENV
from fleet_shared.subjects import PROVIDERS, Subjects

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
HELM = DEPLOY / "helm" / "model-router-fleet"
FLEET_SERVICES = ["router", "ledger", *(f"worker-{p}" for p in PROVIDERS), "gateway"]


def load(path: Path):
    return yaml.safe_load(path.read_text())


def load_module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- PromQL, read just enough to name its metrics and labels ---------------------------

_EXPOSED = {}
for _spec in CATALOGUE:
    names = [f"{_spec.name}_{s}" for s in ("bucket", "sum", "count")] if _spec.kind == "histogram" else [_spec.name]
    for _name in names:
        _EXPOSED[_name] = set(_spec.labels) | ({"le"} if _name.endswith("_bucket") else set())
#: Prometheus's own series, and the labels it attaches to every scraped one
_BUILTIN = {"up": set()}
_TARGET_LABELS = {"instance", "job"}
_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "bool", "offset", "group_left", "group_right"}


def promql_refs(expr: str) -> tuple[set[str], set[str]]:
    """(metric names, label names) an expression reads."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    labels = set(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", " ".join(re.findall(r"\{([^}]*)\}", text))))
    for group in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", text):
        labels |= {g.strip() for g in group.split(",") if g.strip()}
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\b\d+(?:\.\d+)?(?:e[+-]?\d+)?\b", " ", text)
    metrics = set()
    for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        if text[match.end() :].lstrip().startswith("(") or match.group(0) in _KEYWORDS:
            continue  # a function or an operator
        metrics.add(match.group(0))
    return metrics, labels


def assert_known(expr: str, where: str) -> None:
    metrics, labels = promql_refs(expr)
    assert metrics, f"{where}: no metric in {expr!r}"
    known = {**_EXPOSED, **_BUILTIN}
    unknown = metrics - known.keys()
    assert not unknown, f"{where}: {sorted(unknown)} not in the metrics catalogue"
    allowed = set().union(*(known[m] for m in metrics)) | _TARGET_LABELS
    assert labels <= allowed, f"{where}: labels {sorted(labels - allowed)} not on {sorted(metrics)}"


def test_the_promql_reader_finds_metrics_and_labels():
    metrics, labels = promql_refs(
        'sum by (model) (rate(fleet_cost_usd_total{key!="none"}[5m])) / clamp_min(max(up), 1e-9) and on(job) vector(1)'
    )
    assert metrics == {"fleet_cost_usd_total", "up"}
    assert labels == {"model", "key", "job"}
    with pytest.raises(AssertionError, match="not in the metrics catalogue"):
        assert_known("rate(fleet_no_such_metric[5m])", "test")
    with pytest.raises(AssertionError, match="labels"):
        assert_known("sum by (job_id) (fleet_jobs_total)", "test")


# -- every file parses -------------------------------------------------------------------


def test_every_yaml_and_json_file_under_deploy_parses():
    templates = HELM / "templates"
    files = [p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml", ".json") and templates not in p.parents]
    assert len(files) >= 10
    for path in files:
        if path.suffix == ".json":
            json.loads(path.read_text())
        else:
            assert list(yaml.safe_load_all(path.read_text())), path


# -- compose -------------------------------------------------------------------------------


def compose() -> dict:
    return load(DEPLOY / "compose" / "compose.yaml")


def test_compose_runs_a_three_node_jetstream_cluster_and_every_service():
    services = compose()["services"]
    assert {"nats-1", "nats-2", "nats-3", "postgres", "prometheus", "grafana", *FLEET_SERVICES} <= services.keys()
    conf = (DEPLOY / "compose" / "nats.conf").read_text()
    assert all(f"nats-route://nats-{i}:6222" in conf for i in (1, 2, 3)) and "jetstream" in conf
    for name in ("nats-1", "nats-2", "nats-3"):
        assert services[name]["environment"]["SERVER_NAME"] == name
        assert services[name]["healthcheck"]["test"]
    for name in FLEET_SERVICES:
        service = services[name]
        env = service["environment"]
        assert env["FLEET_STREAM_REPLICAS"] == "3", name
        assert set(env["NATS_URL"].split(",")) == {f"nats://nats-{i}:4222" for i in (1, 2, 3)}, name
        assert service["healthcheck"]["test"][-2:] == ["fleet_shared.ops_http", "/readyz"], name
        assert {"nats-1", "nats-2", "nats-3"} <= service["depends_on"].keys(), name
    assert "postgres" in services["ledger"]["depends_on"]


def known_env() -> set[str]:
    names = set(Settings._ENV.values())
    for url_var, key_var, _ in PROVIDER_ENV.values():
        names |= {url_var, key_var, f"{key_var}_FILE"}
    from fleet_gateway.settings import GatewaySettings

    names |= set(GatewaySettings._ENV.values()) | {"GATEWAY_KEYS", "GATEWAY_KEYS_FILE"}
    return names | {"NATS_PASSWORD_FILE", "NATS_TOKEN_FILE"}


def test_deployments_set_only_environment_variables_the_services_read():
    overlay = load(DEPLOY / "compose" / "compose.emulators.yaml")["services"]
    for services in (compose()["services"], overlay):
        for name in FLEET_SERVICES:
            env = set(services.get(name, {}).get("environment", {}))
            assert env <= known_env(), f"{name}: {sorted(env - known_env())}"
    values = load(HELM / "values.yaml")
    configmap = (HELM / "templates" / "configmap.yaml").read_text()
    helm_env = set(re.findall(r"^\s+([A-Z][A-Z0-9_]+):", configmap, re.M))
    for provider in PROVIDERS:
        helm_env |= set(values["workers"][provider]["env"])
    assert helm_env <= known_env(), sorted(helm_env - known_env())


# -- Prometheus ------------------------------------------------------------------------------


def test_every_fleet_service_has_a_scrape_target_on_its_metrics_port():
    jobs = {job["job_name"]: job for job in load(DEPLOY / "prometheus" / "prometheus.yml")["scrape_configs"]}
    services = compose()["services"]
    for name in FLEET_SERVICES:
        (target,) = jobs[f"fleet-{name}"]["dns_sd_configs"]
        assert target["names"] == [name]
        assert str(target["port"]) == services[name]["environment"]["FLEET_METRICS_PORT"]


def alert_rules() -> list[dict]:
    groups = load(DEPLOY / "prometheus" / "rules" / "fleet-alerts.yml")["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_the_alerts_asked_for_exist_and_read_only_catalogued_metrics():
    rules = alert_rules()
    names = {rule["alert"] for rule in rules}
    assert {"FleetBudgetSoftLimit", "FleetModelDown", "FleetConsumerLagGrowing", "FleetDeadLetters"} <= names
    for rule in rules:
        assert_known(rule["expr"], rule["alert"])
        assert rule["labels"]["severity"] in ("warning", "critical")
    # every alert has a promtool unit test
    tested = load(DEPLOY / "prometheus" / "rules" / "fleet-alerts.test.yml")
    covered = {case["alertname"] for test in tested["tests"] for case in test["alert_rule_test"]}
    assert {"FleetBudgetSoftLimit", "FleetModelDown", "FleetConsumerLagGrowing", "FleetDeadLetters"} <= covered


# -- Grafana ---------------------------------------------------------------------------------


def test_the_dashboard_is_generated_provisioned_and_reads_catalogued_metrics():
    generator = load_module(DEPLOY / "grafana" / "dashboard.py", "fleet_dashboard")
    path = DEPLOY / "grafana" / "dashboards" / "fleet.json"
    assert path.read_text() == generator.render(), "run python deploy/grafana/dashboard.py"
    board = json.loads(path.read_text())
    panels = [p for p in board["panels"] if p["type"] != "row"]
    assert len(panels) >= 20
    for panel in panels:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "fleet-prometheus"
            assert_known(target["expr"].replace("$__rate_interval", "5m"), panel["title"])
    (source,) = load(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yaml")["datasources"]
    assert source["uid"] == "fleet-prometheus" and source["url"] == "http://prometheus:9090"
    (provider,) = load(DEPLOY / "grafana" / "provisioning" / "dashboards" / "fleet.yaml")["providers"]
    mounts = compose()["services"]["grafana"]["volumes"]
    assert f"../grafana/dashboards:{provider['options']['path']}:ro" in mounts


# -- images ----------------------------------------------------------------------------------


@pytest.mark.parametrize("service", ["router", "workers", "ledger", "gateway", "emulators"])
def test_each_image_installs_only_its_own_hash_pinned_slice(service):
    dockerfile = (DEPLOY / "docker" / f"{service}.Dockerfile").read_text()
    sources = set(re.findall(r"^COPY (?!--from)(\S+)", dockerfile, re.M))
    folders = {
        "router": "services/router",
        "workers": "services/workers",
        "ledger": "services/ledger",
        "gateway": "services/gateway",
    }
    expected = {"deploy/docker/requirements/build.txt", f"deploy/docker/requirements/{service}.txt"}
    expected |= {f"{folders[service]}/", "shared/"} if service in folders else {"services/emulators/"}
    assert sources == expected
    assert "--require-hashes" in dockerfile and "pip check" in dockerfile and "USER 10001" in dockerfile
    slice_ = (DEPLOY / "docker" / "requirements" / f"{service}.txt").read_text()
    assert "--hash=sha256:" in slice_ and "pytest" not in slice_ and "ruff" not in slice_


def test_the_lock_slices_are_up_to_date():
    lock_slice = load_module(DEPLOY / "docker" / "lock_slice.py", "lock_slice")
    assert lock_slice.main(["--check"]) == 0, "run python deploy/docker/lock_slice.py"
    entries = lock_slice.parse_lock((REPO / "requirements.lock").read_text())
    assert "asyncpg" in lock_slice.needed(entries, ("fleet-shared", "fleet-ledger"))
    assert "asyncpg" not in lock_slice.needed(entries, ("fleet-shared", "fleet-router"))
    assert "aiohttp" not in lock_slice.needed(entries, ("fleet-shared", "fleet-router"))
    gateway = lock_slice.needed(entries, ("fleet-shared", "fleet-gateway"))
    assert "aiohttp" in gateway and "asyncpg" not in gateway


def test_the_gateway_listens_with_keys_only_and_is_probed_like_every_service():
    service = compose()["services"]["gateway"]
    env = service["environment"]
    assert env["GATEWAY_HOST"] == "0.0.0.0" and env["GATEWAY_KEYS_FILE"] == "/run/secrets/gateway_keys"
    assert "gateway_keys" in service["secrets"] and "4000:4000" in service["ports"]
    dockerfile = (DEPLOY / "docker" / "gateway.Dockerfile").read_text()
    assert 'ENTRYPOINT ["python", "-m", "fleet_gateway"]' in dockerfile and "/readyz" in dockerfile
    template = (HELM / "templates" / "gateway.yaml").read_text()
    assert "kind: Deployment" in template and "kind: Service" in template
    assert 'fleet/metrics: "true"' in template  # scraped by the PodMonitor like every fleet pod
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
        assert re.search(rf"{probe}: {{httpGet: {{path: {path}, port: ops}}", template), probe
    assert "GATEWAY_KEYS_FILE" in template and "secretName: {{ .Values.gateway.keysSecret }}" in template
    values = load(HELM / "values.yaml")["gateway"]
    assert values["enabled"] and values["port"] == 4000 and values["keysSecret"]


# -- Helm ------------------------------------------------------------------------------------


def test_the_chart_uses_the_official_nats_chart_as_a_three_node_jetstream_cluster():
    chart = load(HELM / "Chart.yaml")
    (nats,) = chart["dependencies"]
    assert nats["name"] == "nats" and nats["repository"] == "https://nats-io.github.io/k8s/helm/charts/"
    values = load(HELM / "values.yaml")
    config = values["nats"]["config"]
    assert config["cluster"] == {"enabled": True, "replicas": 3}
    assert config["jetstream"]["enabled"] and config["jetstream"]["fileStore"]["enabled"]
    assert config["monitor"]["enabled"]  # KEDA reads consumer lag from the monitoring port
    assert values["fleet"]["streamReplicas"] == config["cluster"]["replicas"]
    assert set(values["workers"]) >= set(PROVIDERS)


def test_keda_scales_each_worker_type_on_its_own_consumer():
    template = (HELM / "templates" / "scaledobjects.yaml").read_text()
    assert "type: nats-jetstream" in template and 'list "lmstudio" "openai" "anthropic" "gemini"' in template
    for field in ("natsServerMonitoringEndpoint", "account", "stream", "consumer", "lagThreshold"):
        assert f"{field}:" in template
    assert 'printf "worker-%s" $provider' in template and "_DISPATCH" in template
    assert {f"worker-{p}" for p in PROVIDERS} <= L.CONSUMERS
    # the chart's stream-name stem is the code's: upper case, dots and dashes to underscores
    helpers = (HELM / "templates" / "_helpers.tpl").read_text()
    assert 'upper | replace "." "_" | replace "-" "_"' in helpers
    assert (
        Subjects("prod.llm-a").dispatch_stream == "prod.llm-a".upper().replace(".", "_").replace("-", "_") + "_DISPATCH"
    )
    assert "minReplicaCount: 1" in (HELM / "values.yaml").read_text()  # never 0: see values.yaml


# -- with the real tools, where this machine has them ---------------------------------------


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (Debian package prometheus)")
def test_promtool_accepts_the_config_and_the_rules_pass_their_unit_tests():
    rules = DEPLOY / "prometheus" / "rules"
    for args in (
        ["check", "config", "--syntax-only", str(DEPLOY / "prometheus" / "prometheus.yml")],
        ["check", "rules", str(rules / "fleet-alerts.yml")],
        ["test", "rules", "fleet-alerts.test.yml"],
    ):
        done = subprocess.run(["promtool", *args], cwd=rules, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
