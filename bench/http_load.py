"""HTTP load for the API benchmarks: client processes with threads on keep-alive connections, and
an organisation (a team, a rep and the rep's token) made through the directory API."""
from __future__ import annotations

import multiprocessing as mp
import random
import time

import urllib3

from bench.common import summary_ms

SECRET = "bench-secret-bench-secret-bench-secret-0123"
ADMIN_PASSWORD = "bench-admin-password"
CLIENT_PROCESSES, THREADS_PER_PROCESS = 4, 8  # 32 clients


def client_process(args) -> tuple[int, list[float]]:
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


def load(base: str, paths: list[str], token: str, warmup: float, duration: float, *,
          processes: int = CLIENT_PROCESSES, threads: int = THREADS_PER_PROCESS) -> dict:
    """processes x threads clients, each on HTTP keep-alive, for `duration` seconds after `warmup`."""
    with mp.get_context("spawn").Pool(processes) as pool:
        results = pool.map(client_process, [(base, paths, token, warmup, duration, threads)] * processes)
    latencies = [t for _, lat in results for t in lat]
    errors = sum(e for e, _ in results)
    return {"throughput_rps": round(len(latencies) / duration, 1), "errors": errors, **summary_ms(latencies)}


def organisation(gateway_url: str) -> tuple[str, str, str]:
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


def paired(direct_base: str, edge_base: str, paths: list[str], token: str, warmup: float, duration: float, *,
           tag: str = "") -> dict:
    """One client alternating, request by request, between two servers on keep-alive connections
    (which goes first swaps each time): both see the same moment of a noisy machine, so the
    difference of their latencies is the cost of the hop, not of whatever else ran in that round.
    Returns each side's summary and the median of the paired differences. With a `tag`, each
    measured request carries X-Request-ID "<tag>-<turn>-<side>" (0 direct, 1 edge) and `took` maps
    those ids to the client's latency in seconds, to be matched with the service's access log."""
    def pool_for(base: str):
        host, port = base.removeprefix("http://").split(":")
        return urllib3.HTTPConnectionPool(host, int(port), maxsize=1, block=True, retries=False)

    pools, headers, rnd = (pool_for(direct_base), pool_for(edge_base)), {"Authorization": f"Bearer {token}"}, \
        random.Random(7)
    latencies: tuple[list[float], list[float]] = ([], [])
    differences, errors, by_id = [], 0, {}
    start = time.monotonic()
    measure_from, stop_at = start + warmup, start + warmup + duration
    turn = 0
    while (now := time.monotonic()) < stop_at:
        path, took = rnd.choice(paths), [0.0, 0.0]
        for side in ((0, 1) if turn % 2 == 0 else (1, 0)):
            t = time.perf_counter()
            r = pools[side].request("GET", path, headers={**headers, "X-Request-ID": f"{tag}-{turn}-{side}"}
                                    if tag else headers)
            took[side] = time.perf_counter() - t
            errors += r.status != 200
        if now >= measure_from:
            for side in (0, 1):
                latencies[side].append(took[side])
                if tag:
                    by_id[f"{tag}-{turn}-{side}"] = took[side]
            differences.append(took[1] - took[0])
        turn += 1
    differences.sort()
    return {"direct": {"errors": errors, **summary_ms(latencies[0])}, "edge": summary_ms(latencies[1]),
            "median_paired_difference_ms": round(differences[len(differences) // 2] * 1000, 3) if differences else None,
            **({"took": by_id} if tag else {})}
