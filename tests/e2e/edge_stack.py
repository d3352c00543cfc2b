"""The HAProxy edge (deploy/edge/haproxy.cfg, written by gateway/edge.py) in front of a test stack:
a real haproxy process started through infra/haproxy/haproxy.sh, its upstreams the stack's APIs."""
from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import requests

from gateway.edge import CONFIG_FILE
from infra.stack import REPO
from infra.stack import edge_env as stack_edge_env
from tests.e2e.gateway_stack import Crm, free_port
from tests.infra import wait_for

SCRIPT = REPO / "infra" / "haproxy" / "haproxy.sh"


@dataclass
class Edge:
    env: dict
    port: int
    metrics_port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api(self, path: str) -> str:
        return f"{self.url}/api/v1{path}"

    def stop(self) -> None:
        subprocess.run([str(SCRIPT), "stop"], env=self.env, check=True)


def edge_env(crm: Crm, state_dir: Path, **overrides) -> dict:
    """The edge's environment as make run builds it (infra.stack.edge_env), in front of this stack's
    APIs, on ports of its own, with limits no test reaches unless it lowers them."""
    ports = {name: port for name, port in crm.ports.items() if name != "gateway-metrics"}
    return {**stack_edge_env(crm.gateway_env, ports, bind=f"127.0.0.1:{free_port()}",
                             metrics_bind=f"127.0.0.1:{free_port()}"),
            "EDGE_STATE_DIR": str(state_dir), "EDGE_PEER_NAME": "local", "EDGE_PEERS": f"local@127.0.0.1:{free_port()}",
            "EDGE_LIMIT_PER_USER": "100000", "EDGE_LIMIT_PER_ADDRESS": "100000", "EDGE_LIMIT_LOGIN": "1000",
            **overrides}


def start_edge(crm: Crm, state_dir: Path, **overrides) -> Edge:
    env = edge_env(crm, state_dir, **overrides)
    subprocess.run([str(SCRIPT), "start", str(CONFIG_FILE)], env=env, check=True)
    edge = Edge(env=env, port=int(env["EDGE_BIND"].rsplit(":", 1)[1]),
                metrics_port=int(env["EDGE_METRICS_BIND"].rsplit(":", 1)[1]))

    def up() -> bool:
        try:  # the edge answers, and its health checks found the gateway
            return requests.get(f"{edge.url}/healthz", timeout=1).json().get("service") == "gateway"
        except (requests.RequestException, ValueError):
            return False

    try:
        wait_for(up, timeout=30, what="the edge up, in front of the gateway")
    except BaseException:
        edge.stop()
        raise
    return edge
