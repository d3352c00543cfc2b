"""Writes the deployment from the code, so the two cannot drift apart:

- `deploy/compose.yaml`: one laptop with Docker (Kafka in KRaft mode, PostgreSQL with a database
  per service, every API and worker, Prometheus, Grafana);
- `deploy/k8s/base/...` and the overlays `dev` and `prod` (kustomize): per deployable an API and a
  worker Deployment, Service, ConfigMap, HPA (API, on CPU), KEDA ScaledObject (worker, on consumer
  lag), PodDisruptionBudgets and NetworkPolicies; Strimzi Kafka with a KafkaTopic per topic;
  a CloudNativePG Cluster per database; the gateway's Ingress; alert rules and the dashboard;
- `deploy/grafana/crm-dashboard.json`.

What it reads from the code: each deployable's worker spec (consumer groups and topics), every
environment variable its packages read (deploy/inventory.py), and the topics of CONTRACT §5.
`python -m deploy.generate` rewrites the files; `--check` fails if they are not current (a test runs it).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import yaml

from deploy.inventory import (
    CLUSTER_PROXIES,
    DEPLOYABLES,
    EDGE_CONFIG_DIR,
    EDGE_IMAGE,
    EDGE_METRICS_PORT,
    EDGE_PORT,
    Deployable,
    edge_env,
    env_for,
    topics,
)
from gateway.edge import CONFIG_FILE as EDGE_CONFIG_FILE

ROOT = Path(__file__).resolve().parent
K8S = ROOT / "k8s"
PART_OF = "sfa-crm"
API_PORT, METRICS_PORT = 8000, 9100
KAFKA_CLUSTER = "crm-kafka"
KAFKA_BOOTSTRAP = f"{KAFKA_CLUSTER}-kafka-bootstrap:9092"
SECURITY = {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}
POD_SECURITY = {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001,
                "seccompProfile": {"type": "RuntimeDefault"}}
TMP = "/tmp"  # noqa: S108 - the container's own empty volume, not a shared host directory
HEADER = "# Written by deploy/generate.py from the code; edit the generator, not this file.\n"


def _labels(d: Deployable, component: str) -> dict:
    return {"app.kubernetes.io/name": d.name, "app.kubernetes.io/component": component,
            "app.kubernetes.io/part-of": PART_OF}


def _env_list(d: Deployable, component: str) -> list[dict]:
    out = []
    for name, source in env_for(d, component, kafka=KAFKA_BOOTSTRAP).items():
        if isinstance(source, dict):  # a secret reference ("compose" is the value compose uses instead)
            ref = {k: v for k, v in source.items() if k != "compose"}
            out.append({"name": name, "valueFrom": {"secretKeyRef": ref}})
        else:
            out.append({"name": name, "valueFrom": {"configMapKeyRef": {"name": f"{d.name}-config", "key": name}}})
    return out


def _container(d: Deployable, component: str) -> dict:
    probe_port = "http" if component == "api" else "metrics"
    container = {
        "name": component, "image": d.image, "imagePullPolicy": "IfNotPresent",
        "env": _env_list(d, component),
        "ports": ([{"name": "http", "containerPort": API_PORT}] + (
            # The gateway's API port is the public one: its /metrics are on the metrics port.
            [{"name": "metrics", "containerPort": METRICS_PORT}] if d.name == "gateway" else []))
        if component == "api" else [{"name": "metrics", "containerPort": METRICS_PORT}],
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": probe_port}, "periodSeconds": 10,
                          "timeoutSeconds": 3, "failureThreshold": 3},
        "readinessProbe": {"httpGet": {"path": "/readyz" if component == "api" else "/healthz", "port": probe_port},
                           "periodSeconds": 10, "timeoutSeconds": 3, "failureThreshold": 3},
        "startupProbe": {"httpGet": {"path": "/healthz", "port": probe_port}, "periodSeconds": 2,
                         "failureThreshold": 60},
        "resources": d.resources[component],
        "securityContext": SECURITY,
        "volumeMounts": [{"name": "tmp", "mountPath": TMP}],
    }
    if component != "api":
        container["command"] = ["python", "-m", d.package, component]
    return container


def _deployment(d: Deployable, component: str) -> dict:
    spec: dict = {
        "serviceAccountName": d.name, "automountServiceAccountToken": False,
        "securityContext": POD_SECURITY, "terminationGracePeriodSeconds": 30,
        "containers": [_container(d, component)],
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}],
    }
    if component == "api":
        # Migrations run before the API starts; they hold a PostgreSQL advisory lock (crmkit.migrations),
        # so replicas starting together apply them once.
        migrate = {k: v for k, v in _container(d, "api").items()
                   if k in ("image", "imagePullPolicy", "env", "resources", "securityContext", "volumeMounts")}
        spec["initContainers"] = [{"name": "migrate", **migrate, "command": ["python", "-m", d.package, "migrate"]}]
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": f"{d.name}-{component}", "labels": _labels(d, component)},
            "spec": {"replicas": 2 if component == "api" else 1,
                     "selector": {"matchLabels": _labels(d, component)},
                     "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
                     "template": {"metadata": {"labels": _labels(d, component),
                                               "annotations": {"prometheus.io/scrape": "true"}},
                                  "spec": spec}}}


SMTP_PORTS = (25, 465, 587)  # to a relay outside the cluster
# Mailpit, the development overlay's relay (crm-smtp: host=mailpit): the one pod inside the cluster the
# senders may reach. A relay on a private network needs its CIDR added to the policy by an overlay.
IN_CLUSTER_RELAY = {"app.kubernetes.io/name": "mailpit"}, 1025
# What is not the public internet (the same kinds of address the SSRF guard refuses, services/
# notifications/ssrf.py; tests/integration/test_deployment.py checks that each it refuses is here).
PRIVATE_IPV4 = ["0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
                "192.0.0.0/24", "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24",
                "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4"]
PRIVATE_IPV6 = ["::/96", "::ffff:0:0/96", "::ffff:0:0:0/96", "64:ff9b::/96", "64:ff9b:1::/48", "100::/64",
                "2001::/23", "2001:db8::/32", "2002::/16", "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8"]


def _network_policies(d: Deployable) -> list[dict]:
    """Default deny is in base/platform; these open what each part needs, and nothing more."""
    dns = {"to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
           "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}
    kafka = {"to": [{"podSelector": {"matchLabels": {"strimzi.io/cluster": KAFKA_CLUSTER}}}],
             "ports": [{"protocol": "TCP", "port": 9092}]}
    database = {"to": [{"podSelector": {"matchLabels": {"cnpg.io/cluster": d.database}}}],
                "ports": [{"protocol": "TCP", "port": 5432}]}
    monitoring = {"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]}
    # Every API is called by the edge; the services' APIs also by the gateway (composed views, the
    # merged API document). Nothing from outside the namespace reaches any of them.
    callers = [{"podSelector": {"matchLabels": EDGE_LABELS}}]
    if d.name != "gateway":
        callers.append({"podSelector": {"matchLabels": {"app.kubernetes.io/name": "gateway",
                                                        "app.kubernetes.io/component": "api"}}})
    upstreams = [{"to": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": u,
                                                          "app.kubernetes.io/component": "api"}}}],
                  "ports": [{"protocol": "TCP", "port": API_PORT}]} for u in d.upstreams]
    # The senders alone go out: to an SMTP relay on a public address (or mailpit in the cluster) and to
    # webhook receivers over HTTPS on public addresses (the service's SSRF guard checks each target
    # too; this is the second wall). A webhook on another port than 443 cannot be reached.
    public = [{"ipBlock": {"cidr": "0.0.0.0/0", "except": PRIVATE_IPV4}},
              {"ipBlock": {"cidr": "::/0", "except": PRIVATE_IPV6}}]
    smtp = {"to": public, "ports": [{"protocol": "TCP", "port": p} for p in SMTP_PORTS]}
    relay = {"to": [{"podSelector": {"matchLabels": IN_CLUSTER_RELAY[0]}}],
             "ports": [{"protocol": "TCP", "port": IN_CLUSTER_RELAY[1]}]}
    webhooks = {"to": public, "ports": [{"protocol": "TCP", "port": 443}]}
    egress_of = {"api": [dns, kafka, database, *upstreams], "worker": [dns, kafka, database],
                 "sender": [dns, database, smtp, relay, webhooks]}
    policies = []
    for component in d.components:
        scraped = API_PORT if component == "api" and d.name != "gateway" else METRICS_PORT
        ingress = [{**monitoring, "ports": [{"protocol": "TCP", "port": scraped}]}]
        if component == "api":
            ingress.append({"from": callers, "ports": [{"protocol": "TCP", "port": API_PORT}]})
        policies.append({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                         "metadata": {"name": f"{d.name}-{component}", "labels": _labels(d, component)},
                         "spec": {"podSelector": {"matchLabels": _labels(d, component)},
                                  "policyTypes": ["Ingress", "Egress"], "ingress": ingress,
                                  "egress": egress_of[component]}})
    return policies


def _scaled_object(d: Deployable) -> dict:
    # KEDA's operator resolves the name from its own namespace: the full name, per overlay.
    triggers = [{"type": "kafka", "metadata": {"bootstrapServers": _bootstrap_fqdn("crm"), "consumerGroup": group,
                                               "topic": topic, "lagThreshold": "500", "offsetResetPolicy": "earliest"}}
                for group, topic in d.consumed]
    # A group's consumers beyond its topic's partitions sit idle: the busiest topic's partition count
    # is as far as the worker usefully scales.
    most = max(d.partitions_of(topic) for _, topic in d.consumed)
    return {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
            "metadata": {"name": f"{d.name}-worker", "labels": _labels(d, "worker")},
            "spec": {"scaleTargetRef": {"name": f"{d.name}-worker"}, "minReplicaCount": 1,
                     "maxReplicaCount": most, "cooldownPeriod": 300, "triggers": triggers}}


def _bootstrap_fqdn(namespace: str) -> str:
    return f"{KAFKA_CLUSTER}-kafka-bootstrap.{namespace}.svc:9092"


def _deployable_resources(d: Deployable) -> dict[str, list[dict] | dict]:
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"{d.name}-config"},
              "data": {k: str(v) for c in d.components
                       for k, v in env_for(d, c, kafka=KAFKA_BOOTSTRAP).items() if not isinstance(v, dict)}}
    resources: dict[str, list[dict] | dict] = {
        "serviceaccount.yaml": {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": d.name},
                                "automountServiceAccountToken": False},
        "configmap.yaml": config,
        **{f"{c}.yaml": _deployment(d, c) for c in d.components},
        "service.yaml": {"apiVersion": "v1", "kind": "Service",
                         "metadata": {"name": f"{d.name}-api", "labels": _labels(d, "api")},
                         "spec": {"selector": _labels(d, "api"),
                                  "ports": [{"name": "http", "port": API_PORT, "targetPort": "http"}]}},
        "hpa.yaml": {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                     "metadata": {"name": f"{d.name}-api", "labels": _labels(d, "api")},
                     "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": f"{d.name}-api"},
                              "minReplicas": 2, "maxReplicas": 10,
                              "metrics": [{"type": "Resource", "resource": {
                                  "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}]}},
        "scaledobject.yaml": _scaled_object(d),
        "pdb.yaml": [{"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                      "metadata": {"name": f"{d.name}-{c}", "labels": _labels(d, c)},
                      "spec": {"maxUnavailable": 1, "selector": {"matchLabels": _labels(d, c)}}}
                     for c in d.components],
        "networkpolicy.yaml": _network_policies(d),
        "database.yaml": {"apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster",
                          "metadata": {"name": d.database, "labels": _labels(d, "database")},
                          "spec": {"instances": 3, "imageName": "ghcr.io/cloudnative-pg/postgresql:16.4",
                                   "bootstrap": {"initdb": {"database": d.name, "owner": d.name}},
                                   "storage": {"size": "20Gi"}}},
    }
    return resources


EDGE_LABELS = {"app.kubernetes.io/name": "edge", "app.kubernetes.io/component": "edge"}


def _edge_resources() -> dict[str, list[dict] | dict]:
    """The public entry: HAProxy with the configuration rendered from the route policy
    (deploy/edge/haproxy.cfg, in a ConfigMap mounted over the image's copy, so a policy change rolls
    out as a ConfigMap change), its Service, the Ingress, an HPA, a PDB and its NetworkPolicy: the
    only pods reachable from the ingress controller, and the only ones (with the gateway, for the
    composed views) that reach the APIs."""
    labels = {**EDGE_LABELS, "app.kubernetes.io/part-of": PART_OF}
    values = edge_env(upstream=lambda name: f"{name}-api:{API_PORT}", trusted_proxies=CLUSTER_PROXIES)
    env = []
    for name, source in values.items():
        if isinstance(source, dict):
            env.append({"name": name, "valueFrom": {"secretKeyRef": {k: v for k, v in source.items() if k != "compose"}}})
        else:
            env.append({"name": name, "valueFrom": {"configMapKeyRef": {"name": "edge-env", "key": name}}})
    probe = {"httpGet": {"path": "/healthz", "port": "metrics"}, "periodSeconds": 5, "timeoutSeconds": 2,
             "failureThreshold": 3}
    container = {
        "name": "edge", "image": EDGE_IMAGE, "imagePullPolicy": "IfNotPresent",
        "command": ["haproxy.sh", "run", f"{EDGE_CONFIG_DIR}/haproxy.cfg"], "env": env,
        "ports": [{"name": "http", "containerPort": EDGE_PORT}, {"name": "metrics", "containerPort": EDGE_METRICS_PORT}],
        "livenessProbe": probe, "readinessProbe": probe,
        # Out of the Service's endpoints before HAProxy stops listening.
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", "5"]}}},
        # 512Mi: HAProxy's 64 KiB buffers for every connection the frontend admits (gateway/edge.py).
        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}},
        "securityContext": SECURITY,
        "volumeMounts": [{"name": "tmp", "mountPath": TMP}, {"name": "config", "mountPath": EDGE_CONFIG_DIR, "readOnly": True}],
    }
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "edge", "labels": labels},
        "spec": {"replicas": 2, "selector": {"matchLabels": EDGE_LABELS},
                 "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
                 # The configuration's digest in the pod template: applying a changed policy rolls the
                 # edge replica by replica (a mounted ConfigMap changes under HAProxy, which would not
                 # read it again by itself).
                 "template": {"metadata": {"labels": labels, "annotations": {
                     "prometheus.io/scrape": "true",
                     "crm/edge-config-sha256": hashlib.sha256(EDGE_CONFIG_FILE.read_bytes()).hexdigest()}},
                              "spec": {"automountServiceAccountToken": False, "securityContext": POD_SECURITY,
                                       # The image stops HAProxy with SIGUSR1 (STOPSIGNAL): a soft stop
                                       # that finishes what is in flight, cut at hard-stop-after (30 s).
                                       "terminationGracePeriodSeconds": 40, "containers": [container],
                                       "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "16Mi"}},
                                                   {"name": "config", "configMap": {"name": "edge-config"}}]}}}}
    dns = {"to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
           "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}
    apis = {"to": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": d.name, "app.kubernetes.io/component": "api"}}}
                   for d in DEPLOYABLES], "ports": [{"protocol": "TCP", "port": API_PORT}]}
    return {
        "configmap.yaml": [
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "edge-config", "labels": labels},
             "data": {"haproxy.cfg": EDGE_CONFIG_FILE.read_text()}},
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "edge-env", "labels": labels},
             "data": {k: str(v) for k, v in values.items() if not isinstance(v, dict)}}],
        "deployment.yaml": deployment,
        "service.yaml": {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "edge", "labels": labels},
                         "spec": {"selector": EDGE_LABELS,
                                  "ports": [{"name": "http", "port": EDGE_PORT, "targetPort": "http"}]}},
        "ingress.yaml": {
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": "crm", "labels": labels,
                         "annotations": {"nginx.ingress.kubernetes.io/proxy-body-size": "20m"}},
            "spec": {"ingressClassName": "nginx",
                     # The API and its docs only; the edge answers 404 for anything else anyway, and its
                     # metrics are on a port no Service exposes.
                     "rules": [{"host": "crm.example.com", "http": {"paths": [
                         {"path": path, "pathType": "Prefix",
                          "backend": {"service": {"name": "edge", "port": {"number": EDGE_PORT}}}}
                         for path in ("/api/", "/docs", "/openapi.json")]}}]}},
        "hpa.yaml": {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                     "metadata": {"name": "edge", "labels": labels},
                     "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "edge"},
                              "minReplicas": 2, "maxReplicas": 6,
                              "metrics": [{"type": "Resource", "resource": {
                                  "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}}}]}},
        "pdb.yaml": {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "edge", "labels": labels},
                     "spec": {"maxUnavailable": 1, "selector": {"matchLabels": EDGE_LABELS}}},
        "networkpolicy.yaml": {
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "edge", "labels": labels},
            "spec": {"podSelector": {"matchLabels": EDGE_LABELS}, "policyTypes": ["Ingress", "Egress"],
                     "ingress": [
                         {"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}],
                          "ports": [{"protocol": "TCP", "port": EDGE_PORT}]},
                         {"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
                          "ports": [{"protocol": "TCP", "port": EDGE_METRICS_PORT}]}],
                     "egress": [dns, apis]}},
    }


def _platform() -> dict[str, list[dict] | dict]:
    kafka = [
        {"apiVersion": "kafka.strimzi.io/v1beta2", "kind": "KafkaNodePool",
         "metadata": {"name": "dual-role", "labels": {"strimzi.io/cluster": KAFKA_CLUSTER}},
         "spec": {"replicas": 3, "roles": ["controller", "broker"],
                  "storage": {"type": "jbod", "volumes": [{"id": 0, "type": "persistent-claim", "size": "100Gi",
                                                           "deleteClaim": False, "kraftMetadata": "shared"}]}}},
        {"apiVersion": "kafka.strimzi.io/v1beta2", "kind": "Kafka",
         "metadata": {"name": KAFKA_CLUSTER, "annotations": {"strimzi.io/node-pools": "enabled",
                                                            "strimzi.io/kraft": "enabled"}},
         "spec": {"kafka": {"version": "4.1.0", "metadataVersion": "4.1-IV1",
                            "listeners": [{"name": "plain", "port": 9092, "type": "internal", "tls": False}],
                            "config": {"offsets.topic.replication.factor": 3,
                                       "transaction.state.log.replication.factor": 3,
                                       "transaction.state.log.min.isr": 2, "default.replication.factor": 3,
                                       "min.insync.replicas": 2, "auto.create.topics.enable": False}},
                  "entityOperator": {"topicOperator": {}, "userOperator": {}}}},
    ]
    kafka_topics = [{"apiVersion": "kafka.strimzi.io/v1beta2", "kind": "KafkaTopic",
                     "metadata": {"name": t.name.replace(".", "-"), "labels": {"strimzi.io/cluster": KAFKA_CLUSTER},
                                  "annotations": {"crm/why": t.why}},
                     "spec": {"topicName": t.name, "partitions": t.partitions, "replicas": 3,
                              "config": {"retention.ms": t.retention_ms, "min.insync.replicas": 2}}}
                    for t in topics()]
    # The CRM's own pods only: Strimzi and CloudNativePG pods carry the part-of label too (operators
    # copy labels to their pods) and bring their own policies.
    deny = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "default-deny"},
            "spec": {"podSelector": {"matchLabels": {"app.kubernetes.io/part-of": PART_OF},
                                     "matchExpressions": [{"key": "app.kubernetes.io/component", "operator": "In",
                                                           "values": ["api", "worker", "sender", "edge"]}]},
                     "policyTypes": ["Ingress", "Egress"]}}
    rules = yaml.safe_load((ROOT / "prometheus" / "rules.yml").read_text())
    monitoring = [
        {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
         "metadata": {"name": "crm", "labels": {"app.kubernetes.io/part-of": PART_OF}}, "spec": rules},
        {"apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor",
         "metadata": {"name": "crm", "labels": {"app.kubernetes.io/part-of": PART_OF}},
         "spec": {"selector": {"matchLabels": {"app.kubernetes.io/part-of": PART_OF}},
                  "podMetricsEndpoints": [{"port": "metrics", "path": "/metrics"}]}},
        # The services' APIs serve /metrics on their HTTP port; the gateway's does not (it is public).
        {"apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor",
         "metadata": {"name": "crm-apis", "labels": {"app.kubernetes.io/part-of": PART_OF}},
         "spec": {"selector": {"matchLabels": {"app.kubernetes.io/part-of": PART_OF,
                                               "app.kubernetes.io/component": "api"},
                               "matchExpressions": [{"key": "app.kubernetes.io/name", "operator": "NotIn",
                                                     "values": ["gateway"]}]},
                  "podMetricsEndpoints": [{"port": "http", "path": "/metrics"}]}},
        {"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": {"name": "crm-dashboard", "labels": {"grafana_dashboard": "1"}},
         "data": {"crm-dashboard.json": json.dumps(dashboard(), indent=1)}},
    ]
    return {"kafka.yaml": kafka, "topics.yaml": kafka_topics, "networkpolicy.yaml": deny, "monitoring.yaml": monitoring}


def dashboard() -> dict:
    """Request rate, errors and latency per service; events per topic; lag; outbox; business counters."""
    def panel(i, title, expr, unit="short", legend="{{service}}"):
        return {"id": i, "type": "timeseries", "title": title, "datasource": {"type": "prometheus", "uid": "prometheus"},
                "gridPos": {"h": 8, "w": 12, "x": (i - 1) % 2 * 12, "y": (i - 1) // 2 * 8},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "targets": [{"refId": "A", "expr": expr, "legendFormat": legend}]}
    panels = [
        panel(1, "Requests per second", "sum by (service) (rate(crm_http_requests_total[5m]))", "reqps"),
        panel(2, "5xx share", 'sum by (service) (rate(crm_http_requests_total{status=~"5.."}[5m])) '
                              "/ sum by (service) (rate(crm_http_requests_total[5m]))", "percentunit"),
        panel(3, "p99 latency", "histogram_quantile(0.99, sum by (service, le) "
                                "(rate(crm_http_request_duration_seconds_bucket[5m])))", "s"),
        panel(4, "Events published per topic", "sum by (topic) (rate(crm_events_published_total[5m]))", "ops",
              "{{topic}}"),
        panel(5, "Consumer lag", "max by (group, topic) (crm_consumer_lag)", "short", "{{group}} {{topic}}"),
        panel(6, "Outbox backlog", "max by (service) (crm_outbox_backlog)"),
        panel(7, "Oldest unpublished event", "max by (service) (crm_outbox_oldest_age_seconds)", "s"),
        panel(8, "Dead-lettered events", "sum by (service, topic) (increase(crm_events_dead_lettered_total[1h]))",
              "short", "{{service}} {{topic}}"),
        panel(9, "Business events (leads created, deals won, orders confirmed...)",
              "sum by (type) (increase(crm_business_events_total[1h]))", "short", "{{type}}"),
        panel(10, "Gateway composed views: failed parts",
              "sum by (upstream, reason) (rate(crm_gateway_upstream_failures_total[5m]))", "ops",
              "{{upstream}} {{reason}}"),
        # The edge (HAProxy's exporter): what clients got, per upstream, and how the upstreams hold up.
        panel(11, "Edge: answers per second by class",
              'sum by (code) (rate(haproxy_frontend_http_responses_total{proxy="public"}[5m]))', "reqps", "{{code}}"),
        panel(12, "Edge: 5xx share per upstream",
              'sum by (proxy) (rate(haproxy_backend_http_responses_total{code="5xx"}[5m])) '
              "/ sum by (proxy) (rate(haproxy_backend_http_responses_total[5m]))", "percentunit", "{{proxy}}"),
        panel(13, "Edge: healthy servers per upstream", "max by (proxy) (haproxy_backend_active_servers)",
              "short", "{{proxy}}"),
        panel(14, "Edge: average response time per upstream",
              "max by (proxy) (haproxy_backend_response_time_average_seconds)", "s", "{{proxy}}"),
        panel(15, "Edge: requests queued for an upstream", "sum by (proxy) (haproxy_backend_current_queue)",
              "short", "{{proxy}}"),
        panel(16, "Edge: sign-ins refused after repeated failures (gateway)",
              'sum (rate(crm_gateway_rate_limited_total{scope="sign_in"}[5m]))', "ops", "sign-in"),
        panel(17, "Orders: approvals waiting, and the longest wait (hours)",
              "max (crm_approvals_pending) or max (crm_approvals_oldest_waiting_seconds) / 3600", "short",
              "waiting"),
        panel(18, "Notifications raised per second, by type", "sum by (type) (rate(crm_notifications_total[5m]))",
              "ops", "{{type}}"),
        panel(19, "Deliveries per second, by channel and outcome",
              "sum by (channel, outcome) (rate(crm_notification_deliveries_total[5m]))", "ops", "{{channel}} {{outcome}}"),
        panel(20, "Deliveries due, and how long the oldest has waited (s)",
              "max by (channel) (crm_notification_deliveries_due) or "
              "max by (channel) (crm_notification_delivery_oldest_due_seconds)", "short", "{{channel}}"),
    ]
    return {"title": "SFA CRM", "uid": "sfa-crm", "schemaVersion": 39, "version": 1, "editable": True,
            "time": {"from": "now-6h", "to": "now"}, "refresh": "30s", "tags": ["crm"], "panels": panels}


def _kustomization(resources: list[str], **extra) -> dict:
    return {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "resources": resources, **extra}


def _overlay(name: str) -> dict:
    prod = name == "prod"
    patches = []
    for d in DEPLOYABLES:
        patches.append({"target": {"kind": "HorizontalPodAutoscaler", "name": f"{d.name}-api"},
                        "patch": yaml.safe_dump([{"op": "replace", "path": "/spec/minReplicas", "value": 3 if prod else 1},
                                                 {"op": "replace", "path": "/spec/maxReplicas",
                                                  "value": 20 if prod else 2}])})
        patches.append({"target": {"kind": "Deployment", "name": f"{d.name}-api"},
                        "patch": yaml.safe_dump([{"op": "replace", "path": "/spec/replicas", "value": 3 if prod else 1}])})
        if not prod:
            patches.append({"target": {"kind": "Cluster", "name": d.database},
                            "patch": yaml.safe_dump([{"op": "replace", "path": "/spec/instances", "value": 1},
                                                     {"op": "replace", "path": "/spec/storage/size", "value": "2Gi"}])})
        namespace = "crm" if prod else "crm-dev"
        patches.append({"target": {"kind": "ScaledObject", "name": f"{d.name}-worker"},
                        "patch": yaml.safe_dump([{"op": "replace", "path": f"/spec/triggers/{i}/metadata/bootstrapServers",
                                                  "value": _bootstrap_fqdn(namespace)}
                                                 for i in range(len(d.consumed))])})
    patches.append({"target": {"kind": "HorizontalPodAutoscaler", "name": "edge"},
                    "patch": yaml.safe_dump([{"op": "replace", "path": "/spec/minReplicas", "value": 3 if prod else 1},
                                             {"op": "replace", "path": "/spec/maxReplicas", "value": 10 if prod else 2}])})
    patches.append({"target": {"kind": "Deployment", "name": "edge"},
                    "patch": yaml.safe_dump([{"op": "replace", "path": "/spec/replicas", "value": 3 if prod else 1}])})
    if not prod:
        # One Kafka node: every replication factor and min ISR down to 1.
        patches.append({"target": {"kind": "KafkaNodePool", "name": "dual-role"},
                        "patch": yaml.safe_dump([{"op": "replace", "path": "/spec/replicas", "value": 1}])})
        single = {"offsets.topic.replication.factor": 1, "transaction.state.log.replication.factor": 1,
                  "transaction.state.log.min.isr": 1, "default.replication.factor": 1, "min.insync.replicas": 1}
        patches.append({"target": {"kind": "Kafka", "name": KAFKA_CLUSTER},
                        "patch": yaml.safe_dump([{"op": "replace", "path": f"/spec/kafka/config/{k.replace('/', '~1')}",
                                                  "value": v} for k, v in single.items()])})
        for t in topics():
            patches.append({"target": {"kind": "KafkaTopic", "name": t.name.replace(".", "-")},
                            "patch": yaml.safe_dump([{"op": "replace", "path": "/spec/replicas", "value": 1},
                                                     {"op": "replace", "path": "/spec/config/min.insync.replicas",
                                                      "value": 1}])})
    extra = {}
    if not prod:
        # Development only: made-up secrets so the overlay runs as it is. Production creates crm-jwt
        # and crm-admin itself (see docs/operations.md); the databases' come from CloudNativePG.
        extra["secretGenerator"] = [
            {"name": "crm-jwt", "literals": ["secret=dev-only-secret-change-me-in-production-0123456789"]},
            {"name": "crm-admin", "literals": ["password=admin-dev-password"]},
            # A mail catcher in the dev namespace (or point these at a relay); production sets its own.
            {"name": "crm-smtp", "literals": ["host=mailpit", "port=1025", "starttls=0"]}]
        extra["generatorOptions"] = {"disableNameSuffixHash": True}
    return _kustomization(["../../base"], namespace="crm" if prod else "crm-dev", **extra,
                          labels=[{"pairs": {"crm/environment": name}, "includeSelectors": False}],
                          images=[{"name": image, "newName": f"ghcr.io/sfa-crm/{image}", "newTag": "1.0.0" if prod else "dev"}
                                  for image in [*(d.image for d in DEPLOYABLES), EDGE_IMAGE]],
                          patches=patches)


def _compose() -> dict:
    x_env = {"KAFKA_BOOTSTRAP_SERVERS": "kafka:9092"}
    services: dict = {
        "kafka": {"image": "apache/kafka:4.1.0", "hostname": "kafka",
                  "environment": {"KAFKA_NODE_ID": "1", "KAFKA_PROCESS_ROLES": "broker,controller",
                                  "KAFKA_LISTENERS": "PLAINTEXT://:9092,CONTROLLER://:9093",
                                  "KAFKA_ADVERTISED_LISTENERS": "PLAINTEXT://kafka:9092",
                                  "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
                                  "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                                  "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@kafka:9093",
                                  "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
                                  "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
                                  "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1"},
                  "healthcheck": {"test": ["CMD-SHELL", "/opt/kafka/bin/kafka-broker-api-versions.sh "
                                                        "--bootstrap-server localhost:9092 >/dev/null"],
                                  "interval": "10s", "timeout": "10s", "retries": 12}},
        "postgres": {"image": "postgres:16.4-bookworm",
                     "environment": {"POSTGRES_USER": "crm", "POSTGRES_PASSWORD": "${POSTGRES_PASSWORD:-crm-dev}"},
                     "volumes": ["pgdata:/var/lib/postgresql/data",
                                 "./compose/create-databases.sql:/docker-entrypoint-initdb.d/create-databases.sql:ro"],
                     # Over TCP, on the last database the init script makes: the socket answers while the
                     # init scripts still run on a local-only server.
                     "healthcheck": {"test": ["CMD-SHELL", f"pg_isready -h 127.0.0.1 -U crm -d {DEPLOYABLES[-1].name}"],
                                     "interval": "5s", "retries": 20}},
    }
    for d in DEPLOYABLES:
        base = {"build": {"context": "..", "target": d.name}, "image": d.image, "user": "10001:10001",
                "read_only": True, "tmpfs": [TMP],
                "depends_on": {"kafka": {"condition": "service_healthy"},
                               "postgres": {"condition": "service_healthy"}}}
        for component in d.components:
            env = {}
            for name, source in env_for(d, component, kafka="kafka:9092").items():
                env[name] = source["compose"] if isinstance(source, dict) else str(source)
            service = {**base, "environment": {**env, **x_env}, "restart": "unless-stopped"}
            migrated = {f"{d.name}-migrate": {"condition": "service_completed_successfully"}}
            service["depends_on"] = {**base["depends_on"], **migrated}
            if component != "api":
                service["command"] = ["python", "-m", d.package, component]
            services[f"{d.name}-{component}"] = service
        services[f"{d.name}-migrate"] = {**base, "environment": services[f"{d.name}-api"]["environment"],
                                         "depends_on": base["depends_on"],
                                         "command": ["python", "-m", d.package, "migrate"], "restart": "no",
                                         "healthcheck": {"disable": True}}
    edge_values = edge_env(upstream=lambda name: f"{name}-api:{API_PORT}")
    services["edge"] = {
        "build": {"context": "..", "target": "edge"}, "image": EDGE_IMAGE, "user": "10001:10001", "read_only": True,
        # On this machine only: the compose file's secrets are development defaults.
        "tmpfs": [TMP], "ports": [f"127.0.0.1:8080:{EDGE_PORT}"],
        "environment": {k: v["compose"] if isinstance(v, dict) else str(v) for k, v in edge_values.items()},
        # The upstreams that exist here; the others (services not built yet) answer 503 at the edge.
        "depends_on": {f"{d.name}-api": {"condition": "service_healthy"} for d in DEPLOYABLES},
        "restart": "unless-stopped"}
    # The notifications service's e-mail goes to a mail catcher on a laptop: read it on :8025.
    services["mailpit"] = {"image": "axllent/mailpit:v1.21", "ports": ["127.0.0.1:8025:8025"], "restart": "unless-stopped"}
    services["prometheus"] = {"image": "prom/prometheus:v2.55.1",
                              "volumes": ["./compose/prometheus.yml:/etc/prometheus/prometheus.yml:ro",
                                          "./prometheus/rules.yml:/etc/prometheus/rules.yml:ro"],
                              "ports": ["9090:9090"]}
    services["grafana"] = {"image": "grafana/grafana:11.3.0", "ports": ["3000:3000"],
                           "volumes": ["./compose/grafana-provisioning:/etc/grafana/provisioning:ro",
                                       "./grafana:/var/lib/grafana/dashboards:ro"],
                           "depends_on": ["prometheus"]}
    return {"name": "sfa-crm", "services": services, "volumes": {"pgdata": {}}}


def _prometheus_config() -> dict:
    targets = [f"{d.name}-{c}:{API_PORT if c == 'api' and d.name != 'gateway' else METRICS_PORT}"
               for d in DEPLOYABLES for c in d.components] + [f"edge:{EDGE_METRICS_PORT}"]
    return {"global": {"scrape_interval": "15s"}, "rule_files": ["/etc/prometheus/rules.yml"],
            "scrape_configs": [{"job_name": "crm", "static_configs": [{"targets": targets}]}]}


def files() -> dict[Path, str]:
    """Every generated file and its content."""
    out: dict[Path, str] = {}

    def put(path: Path, content) -> None:
        if isinstance(content, str):
            out[path] = content
        elif isinstance(content, list):
            out[path] = HEADER + yaml.safe_dump_all(content, sort_keys=False, allow_unicode=True)
        else:
            out[path] = HEADER + yaml.safe_dump(content, sort_keys=False, allow_unicode=True)

    base = K8S / "base"
    for d in DEPLOYABLES:
        resources = _deployable_resources(d)
        for name, content in resources.items():
            put(base / d.name / name, content)
        put(base / d.name / "kustomization.yaml", _kustomization(sorted(resources)))
    edge = _edge_resources()
    for name, content in edge.items():
        put(base / "edge" / name, content)
    put(base / "edge" / "kustomization.yaml", _kustomization(sorted(edge)))
    platform = _platform()
    for name, content in platform.items():
        put(base / "platform" / name, content)
    put(base / "platform" / "kustomization.yaml", _kustomization(sorted(platform)))
    put(base / "kustomization.yaml", _kustomization(["platform", "edge", *[d.name for d in DEPLOYABLES]],
                                                    labels=[{"pairs": {"app.kubernetes.io/part-of": PART_OF},
                                                             "includeSelectors": False}]))
    for overlay in ("dev", "prod"):
        put(K8S / "overlays" / overlay / "kustomization.yaml", _overlay(overlay))
    put(ROOT / "compose.yaml", _compose())
    put(ROOT / "compose" / "prometheus.yml", _prometheus_config())
    put(ROOT / "compose" / "grafana-provisioning" / "datasources" / "prometheus.yaml",
        {"apiVersion": 1, "datasources": [{"name": "Prometheus", "uid": "prometheus", "type": "prometheus",
                                           "url": "http://prometheus:9090", "isDefault": True}]})
    put(ROOT / "compose" / "grafana-provisioning" / "dashboards" / "crm.yaml",
        {"apiVersion": 1, "providers": [{"name": "crm", "type": "file",
                                         "options": {"path": "/var/lib/grafana/dashboards"}}]})
    out[ROOT / "compose" / "create-databases.sql"] = "".join(
        f"CREATE DATABASE {d.name};\n" for d in DEPLOYABLES)
    out[ROOT / "grafana" / "crm-dashboard.json"] = json.dumps(dashboard(), indent=1) + "\n"
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--check", action="store_true", help="fail if a generated file is missing or stale")
    args = parser.parse_args()
    stale = []
    for path, content in files().items():
        if path.exists() and path.read_text() == content:
            continue
        if args.check:
            stale.append(str(path.relative_to(ROOT.parent)))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
    if stale:
        sys.exit("stale or missing (run python -m deploy.generate): " + ", ".join(stale))


if __name__ == "__main__":
    main()
