"""Shared pieces of the benchmarks: infrastructure, timing, percentile and result files."""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

from infra.local import REPO, Broker, Postgres

RESULTS = REPO / "bench" / "results"
BENCH_KAFKA_PORT = int(os.environ.get("CRM_BENCH_KAFKA_PORT", "29092"))
BENCH_PG_PORT = int(os.environ.get("CRM_BENCH_PG_PORT", "25432"))


def infrastructure() -> tuple[Broker, Postgres]:
    broker, pg = Broker(BENCH_KAFKA_PORT, name="bench"), Postgres(BENCH_PG_PORT, name="bench")
    broker.start()
    pg.start()
    return broker, pg


def percentile(values, p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summary_ms(seconds) -> dict:
    ms = [float(s) * 1000 for s in seconds]
    return {"p50_ms": round(percentile(ms, 50), 2), "p99_ms": round(percentile(ms, 99), 2),
            "mean_ms": round(statistics.fmean(ms), 2) if ms else None, "n": len(ms)}


def machine() -> dict:
    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "kafka": subprocess.run(["sed", "-n", "s:.*<kafka.version>\\(.*\\)</kafka.version>.*:\\1:p",
                                     str(REPO / "infra/kafka/pom.xml")], capture_output=True, text=True).stdout.strip()}


def write_result(name: str, result: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {"benchmark": name, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "machine": machine(), **result}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2))
    return path


def timed_gets(session, url: str, n: int, timeout: float = 60) -> list[float]:
    """n sequential GETs of one URL; the seconds each took (every one must answer 200)."""
    times = []
    for _ in range(n):
        t = time.perf_counter()
        r = session.get(url, timeout=timeout)
        times.append(time.perf_counter() - t)
        assert r.status_code == 200, r.text
    return times
