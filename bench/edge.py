"""The HAProxy edge's cost (issue 14): GET /api/v1/leads/{id} and GET /api/v1/leads?limit=50 through
the edge (deploy/edge/haproxy.cfg, verifying the token and the route policy) and straight to the
leads service, in the same run, in alternating rounds, with one client and with 32, over leads in
PostgreSQL. Reports throughput and p50/p99 of each round, the median ratios, and the CPU seconds
the edge and the leads service spent per 1,000 requests.

Goals: at 32 clients the edge keeps at least 90% of direct throughput; with one client it adds at
most 0.5 ms to p50. The one client alternates between the two request by request (so both are
measured at the same moments of a noisy machine); the 32 clients run a round on each in turn.
Everything shares the one machine: the load generator, the edge and the leads API (2 gunicorn
workers)."""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

from bench.common import infrastructure, write_result
from bench.http_load import ADMIN_PASSWORD, SECRET, load, organisation, paired
from bench.leads_list import _generate
from gateway.edge import CONFIG_FILE
from infra.stack import (
    GATEWAY,
    REPO,
    SERVICES,
    api_process,
    edge_env,
    gateway_env,
    migrate,
    service_env,
    worker_process,
)

LEADS = next(s for s in SERVICES if s.name == "leads")
LEADS_PORT, GATEWAY_PORT, EDGE_PORT, EDGE_METRICS_PORT = 18821, 18890, 18881, 18891
CONCURRENCY = {"1_client": (1, 1), "32_clients": (4, 8)}  # client processes x threads each


def _cpu_seconds(leader: int) -> float:
    """User + system CPU so far of a process group (from /proc): its live members', and what the
    leader's reaped children used (gunicorn replaces workers now and then; their CPU moves to the
    master's cutime/cstime when it reaps them)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in _group(leader):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
    return total / ticks


def _group(leader: int) -> list[int]:
    """Every process in the leader's process group (gunicorn's master and its workers)."""
    out = subprocess.run(["pgrep", "-g", str(leader)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _paired_round(leads_url: str, edge_url: str, paths: list[str], token: str, warmup: float, duration: float,
                  edge_pids: int, leads_pids: int, leads_log: Path, tag: str) -> dict:
    """One client, alternating request by request between the edge and the service (http_load.paired):
    p50 added is edge p50 minus direct p50 measured at the same moments. That difference also holds
    whatever the service itself spent more on one side: the direct connection and the edge's are
    served by different gunicorn workers, and after a 32-client round one of them can be 0.4 ms
    slower for a while (with one gunicorn worker both sides' service time is the same, and the
    bimodal rounds are gone). So each request's service time, from the service's access log, is
    taken out of its latency: edge_cost_ms is the median over requests of (edge latency - its
    service time) - (direct latency - its service time), the edge's own cost, which the goal is
    judged on. The edge's CPU is per 1,000 of its requests; the service's per 1,000 of all it
    served in the round."""
    edge_cpu, leads_cpu = _cpu_seconds(edge_pids), _cpu_seconds(leads_pids)
    pair = paired(leads_url, edge_url, paths, token, warmup, duration, tag=tag)
    took, served = pair.pop("took"), pair["edge"]["n"] or 1
    service = _service_seconds(leads_log, tag)
    costs = sorted((took[f"{turn}-1"] - service[f"{turn}-1"]) - (took[f"{turn}-0"] - service[f"{turn}-0"])
                   for turn in {i.rsplit("-", 1)[0] for i in took}
                   if all(f"{turn}-{side}" in service for side in (0, 1)))
    return {**pair, "p50_added_ms": round(pair["edge"]["p50_ms"] - pair["direct"]["p50_ms"], 3),
            "edge_cost_ms": round(costs[len(costs) // 2] * 1000, 3), "requests_matched": len(costs),
            "edge_cpu_s_per_1000": round((_cpu_seconds(edge_pids) - edge_cpu) / served * 1000, 3),
            "leads_cpu_s_per_1000": round((_cpu_seconds(leads_pids) - leads_cpu) / (2 * served) * 1000, 3)}


def _service_seconds(log: Path, tag: str) -> dict[str, float]:
    """The leads service's own time per request of this round, from its access log (crm.access)."""
    found = {}
    for line in log.read_text().splitlines():
        if f'"request_id": "{tag}-' in line:
            entry = json.loads(line)
            found[entry["request_id"]] = entry["duration_ms"] / 1000
    return found


def run(total: int = 200_000, duration: float = 8.0, warmup: float = 2.0, rounds_per_case: int = 3, *,
        only: tuple[str, ...] = (), config: Path = CONFIG_FILE) -> dict:
    """`only` names cases or case/label pairs to run (all by default); `config` is another HAProxy
    configuration to try (the committed one by default)."""
    broker, pg = infrastructure()
    leads_db, gateway_db = pg.create_database(), pg.create_database()
    procs = []
    script = str(REPO / "infra/haproxy/haproxy.sh")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            env = service_env({"LEADS_DATABASE_URL": leads_db, "GATEWAY_DATABASE_URL": gateway_db,
                               "CRM_JWT_SECRET": SECRET, "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
                               # INFO: the access log gives each request's service time (_paired_round).
                               "CRM_LOG_LEVEL": "INFO"}, state_dir=Path(tmp))
            gw_env = gateway_env({**env, "CRM_ADMIN_PASSWORD": ADMIN_PASSWORD}, [LEADS], {"leads": LEADS_PORT})
            migrate(LEADS, env)
            migrate(GATEWAY, gw_env)
            _generate(leads_db.replace("postgresql+psycopg", "postgresql"), total)
            # The workers carry the directory to the leads service's replica (gateway outbox -> Kafka ->
            # leads consumer), without which the service refuses the bench rep's token.
            procs = [api_process(LEADS, env, state_dir=Path(tmp), port=LEADS_PORT, workers=2).start(),
                     api_process(GATEWAY, gw_env, state_dir=Path(tmp), port=GATEWAY_PORT, workers=1).start(),
                     worker_process(LEADS, env, state_dir=Path(tmp), metrics_port=LEADS_PORT + 40).start(),
                     worker_process(GATEWAY, gw_env, state_dir=Path(tmp), metrics_port=GATEWAY_PORT + 40).start()]
            for p in procs:
                p.wait_healthy()
            edge = {**edge_env(env, {"leads": LEADS_PORT, "gateway": GATEWAY_PORT},
                               bind=f"127.0.0.1:{EDGE_PORT}", metrics_bind=f"127.0.0.1:{EDGE_METRICS_PORT}"),
                    "EDGE_STATE_DIR": f"{tmp}/edge", "EDGE_PEERS": f"local@127.0.0.1:{EDGE_PORT + 20}",
                    "EDGE_LIMIT_PER_USER": "100000000", "EDGE_LIMIT_PER_ADDRESS": "100000000"}
            subprocess.run([script, "start", str(config)], env=edge, check=True)
            try:
                edge_pids = int(Path(f"{tmp}/edge/haproxy.pid").read_text())  # the master: leads its group
                leads_pids = procs[0].pid
                edge_url, leads_url = f"http://127.0.0.1:{EDGE_PORT}", f"http://127.0.0.1:{LEADS_PORT}"
                rep_id, team_id, token = organisation(edge_url)
                with psycopg.connect(leads_db.replace("postgresql+psycopg", "postgresql"), autocommit=True) as conn:
                    deadline = time.monotonic() + 60
                    while not conn.execute("select 1 from directory_users where id = %s", (rep_id,)).fetchone():
                        assert time.monotonic() < deadline, "the leads service never learnt of the bench rep"
                        time.sleep(0.2)
                    conn.execute("update leads set owner_id = %s, team_id = %s where owner_id = 'rep-7'", (rep_id, team_id))
                    ids = [str(r[0]) for r in conn.execute("select id from leads where owner_id = %s limit 500", (rep_id,))]
                    conn.execute("analyze leads")
                cases = {"get_by_id": [f"/api/v1/leads/{i}" for i in ids], "list_limit_50": ["/api/v1/leads?limit=50"]}
                results = {}
                for case, paths in cases.items():
                    for label, (processes, threads) in CONCURRENCY.items():
                        if only and case not in only and f"{case}/{label}" not in only:
                            continue
                        rounds = []
                        for _ in range(rounds_per_case):
                            if label == "1_client":
                                rounds.append(_paired_round(leads_url, edge_url, paths, token, warmup, duration,
                                                            edge_pids, leads_pids, procs[0].log_path,
                                                            tag=f"{case}-{len(rounds)}"))
                                continue
                            direct = load(leads_url, paths, token, warmup, duration, processes=processes, threads=threads)
                            edge_cpu, leads_cpu = _cpu_seconds(edge_pids), _cpu_seconds(leads_pids)
                            through = load(edge_url, paths, token, warmup, duration, processes=processes, threads=threads)
                            served = through["n"] or 1
                            rounds.append({
                                "direct": direct, "edge": through,
                                "p50_added_ms": round(through["p50_ms"] - direct["p50_ms"], 3),
                                "throughput_ratio": round(through["throughput_rps"] / direct["throughput_rps"], 3),
                                # CPU over the whole edge round (warm-up included), per 1,000 measured requests.
                                "edge_cpu_s_per_1000": round((_cpu_seconds(edge_pids) - edge_cpu) / served * 1000, 3),
                                "leads_cpu_s_per_1000": round((_cpu_seconds(leads_pids) - leads_cpu) / served * 1000, 3)})
                        measured = ("p50_added_ms", "edge_cpu_s_per_1000", "leads_cpu_s_per_1000",
                                    *(("median_paired_difference_ms", "edge_cost_ms") if label == "1_client"
                                      else ("throughput_ratio",)))
                        medians = {k: statistics.median(r[k] for r in rounds) for k in measured}
                        goal = (medians["edge_cost_ms"] <= 0.5 if label == "1_client"
                                else medians["throughput_ratio"] >= 0.9)
                        results[f"{case}/{label}"] = {**medians, "meets_goal": goal, "rounds": rounds}
            finally:  # while the temporary folder, with the pid file the script stops it by, exists
                subprocess.run([script, "stop"], env=edge, check=False)
    finally:
        for p in procs:
            p.stop()
        pg.drop_database(leads_db)
        pg.drop_database(gateway_db)
    result = {"leads": total, "duration_s": duration, "warmup_s": warmup, "rounds_per_case": rounds_per_case,
              "goal": "32 clients: throughput_ratio >= 0.9; 1 client: edge_cost_ms <= 0.5 (p50_added_ms, which "
                      "also holds the service's own difference between its workers, beside it)", **results}
    print(write_result("edge", result))
    return result
