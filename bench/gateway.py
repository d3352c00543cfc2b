"""Gateway overhead (issue 4): GET /api/v1/leads/{id} and GET /api/v1/leads?limit=50, through the
gateway and straight to the leads service, in the same run, at the same concurrency (32 clients
on HTTP keep-alive), over 200,000 leads in PostgreSQL, in alternating rounds. Reports throughput and
p50/p99 of each round, and the median ratios. Goal: the gateway adds at most 30% to p50 and keeps
at least 75% of direct throughput.

Everything runs on the one machine: the load generator (4 processes x 8 client threads), the
gateway and the leads API (2 gunicorn workers each) share its cores."""
from __future__ import annotations

import multiprocessing as mp
import random
import statistics
import tempfile
import time
from pathlib import Path

import psycopg
import urllib3

from bench.common import infrastructure, summary_ms, write_result
from bench.leads_list import _generate
from infra.stack import GATEWAY, SERVICES, api_process, gateway_env, migrate, service_env

LEADS = next(s for s in SERVICES if s.name == "leads")
SECRET = "bench-secret-bench-secret-bench-secret-0123"
ADMIN_PASSWORD = "bench-admin-password"
LEADS_PORT, GATEWAY_PORT = 18811, 18880
CLIENT_PROCESSES, THREADS_PER_PROCESS = 4, 8  # 32 clients


def _client(args) -> tuple[int, list[float]]:
    """One load-generator process: threads loop over the URLs until the deadline."""
    import threading

    base, paths, token, warmup, duration, threads_per_process = args
    host, port = base.removeprefix("http://").split(":")
    pool = urllib3.HTTPConnectionPool(host, int(port), maxsize=threads_per_process, block=True, retries=False)
    headers = {"Authorization": f"Bearer {token}"}
    latencies: list[float] = []
    errors = [0]
    start = time.monotonic()
    measure_from, stop_at = start + warmup, start + warmup + duration
    lock = threading.Lock()

    def loop(seed: int):
        rnd = random.Random(seed)
        mine = []
        while True:
            now = time.monotonic()
            if now >= stop_at:
                break
            t = time.perf_counter()
            r = pool.request("GET", rnd.choice(paths), headers=headers)
            elapsed = time.perf_counter() - t
            if r.status != 200:
                errors[0] += 1
            elif now >= measure_from:
                mine.append(elapsed)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(threads_per_process)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return errors[0], latencies


def _load(base: str, paths: list[str], token: str, warmup: float, duration: float, *,
          processes: int = CLIENT_PROCESSES, threads: int = THREADS_PER_PROCESS) -> dict:
    """processes x threads clients, each on HTTP keep-alive, for `duration` seconds after `warmup`."""
    with mp.get_context("spawn").Pool(processes) as pool:
        results = pool.map(_client, [(base, paths, token, warmup, duration, threads)] * processes)
    latencies = [t for _, lat in results for t in lat]
    errors = sum(e for e, _ in results)
    return {"throughput_rps": round(len(latencies) / duration, 1), "errors": errors, **summary_ms(latencies)}


def _organisation(gateway_url: str) -> tuple[str, str, str]:
    """A team and a rep created through the gateway's directory API; the rep's token."""
    http = urllib3.PoolManager()

    def call(method, path, body=None, token=None):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        r = http.request(method, f"{gateway_url}/api/v1{path}", json=body, headers=headers)
        assert r.status in (200, 201), r.data
        return r.json()

    admin = call("POST", "/auth/token", {"username": "admin", "password": ADMIN_PASSWORD})["access_token"]
    team = call("POST", "/teams", {"name": "Bench team"}, admin)
    rep = call("POST", "/users", {"username": "bench-rep", "password": "bench-rep-password", "name": "Bench Rep",
                                  "role": "rep", "team_id": team["id"]}, admin)
    token = call("POST", "/auth/token", {"username": "bench-rep", "password": "bench-rep-password"})["access_token"]
    return rep["id"], team["id"], token


def run(total: int = 200_000, duration: float = 8.0, warmup: float = 2.0, rounds_per_case: int = 3) -> dict:
    broker, pg = infrastructure()
    leads_db, gateway_db = pg.create_database(), pg.create_database()
    procs = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            env = service_env({"LEADS_DATABASE_URL": leads_db, "GATEWAY_DATABASE_URL": gateway_db,
                               "CRM_JWT_SECRET": SECRET, "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
                               "CRM_LOG_LEVEL": "WARNING"}, state_dir=Path(tmp))
            gw_env = gateway_env({**env, "CRM_ADMIN_PASSWORD": ADMIN_PASSWORD,
                                  "CRM_RATE_LIMIT_PER_USER": "10000000/minute",
                                  "CRM_RATE_LIMIT_PER_ADDRESS": "10000000/minute"}, [LEADS], {"leads": LEADS_PORT})
            migrate(LEADS, env)
            migrate(GATEWAY, gw_env)
            _generate(leads_db.replace("postgresql+psycopg", "postgresql"), total)
            procs = [api_process(LEADS, env, state_dir=Path(tmp), port=LEADS_PORT, workers=2).start(),
                     api_process(GATEWAY, gw_env, state_dir=Path(tmp), port=GATEWAY_PORT, workers=2).start()]
            for p in procs:
                p.wait_healthy()
            gateway_url, leads_url = f"http://127.0.0.1:{GATEWAY_PORT}", f"http://127.0.0.1:{LEADS_PORT}"
            rep_id, team_id, token = _organisation(gateway_url)
            with psycopg.connect(leads_db.replace("postgresql+psycopg", "postgresql"), autocommit=True) as conn:
                # The rep owns one generated rep's share (total / 200 leads); those are what they read.
                conn.execute("update leads set owner_id = %s, team_id = %s where owner_id = 'rep-7'", (rep_id, team_id))
                ids = [str(r[0]) for r in conn.execute("select id from leads where owner_id = %s limit 500", (rep_id,))]
                conn.execute("analyze leads")
            cases = {"get_by_id": [f"/api/v1/leads/{i}" for i in ids], "list_limit_50": ["/api/v1/leads?limit=50"]}
            results = {}
            for case, paths in cases.items():
                # Alternating rounds, so background noise on a small machine (autovacuum, the broker)
                # falls on both sides; the ratios are taken per round and their median reported.
                rounds = []
                for _ in range(rounds_per_case):
                    direct = _load(leads_url, paths, token, warmup, duration)
                    through = _load(gateway_url, paths, token, warmup, duration)
                    rounds.append({"direct": direct, "gateway": through,
                                   "p50_overhead_ratio": round(through["p50_ms"] / direct["p50_ms"] - 1, 3),
                                   "p99_overhead_ratio": round(through["p99_ms"] / direct["p99_ms"] - 1, 3),
                                   "throughput_ratio": round(through["throughput_rps"] / direct["throughput_rps"], 3)})
                medians = {k: statistics.median(r[k] for r in rounds)
                           for k in ("p50_overhead_ratio", "p99_overhead_ratio", "throughput_ratio")}
                results[case] = {**medians, "meets_goal": medians["p50_overhead_ratio"] <= 0.30
                                 and medians["throughput_ratio"] >= 0.75, "rounds": rounds}
    finally:
        for p in procs:
            p.stop()
        pg.drop_database(leads_db)
        pg.drop_database(gateway_db)
    result = {"leads": total, "clients": CLIENT_PROCESSES * THREADS_PER_PROCESS, "duration_s": duration,
              "warmup_s": warmup, "rounds_per_case": rounds_per_case,
              "goal": "p50_overhead_ratio <= 0.30 and throughput_ratio >= 0.75", **results}
    print(write_result("gateway", result))
    return result
