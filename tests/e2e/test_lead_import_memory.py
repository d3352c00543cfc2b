"""A 20 MiB CSV import against the real leads API and worker on PostgreSQL: the worker streams it,
so its peak memory stays far below what parsing the whole file at once cost (about 50 times the
file: a gigabyte for this one)."""
from __future__ import annotations

import io

import pytest

from tests.infra import wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]
LIMIT_MIB = 300
FILE_BYTES = 20 * 1024 * 1024 - 64 * 1024  # under CRM_MAX_IMPORT_BYTES with the multipart envelope


def _csv() -> bytes:
    out, i = io.BytesIO(), 0
    out.write(b"company,contact_name,email,phone,region,interest\n")
    while out.tell() < FILE_BYTES - 200:
        out.write(f"Company {i} 有限公司,Contact {i},c{i}@example{i % 997}.cn,+86 138{i:08d},east,"
                  f"CNC lathes and milling centres batch {i % 13}\n".encode())
        i += 1
    return out.getvalue()


def _peak_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):  # the process's high-water mark of resident memory
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_a_20_mib_import_keeps_the_worker_under_300_mib(leads_stack):
    content = _csv()
    rows = content.count(b"\n") - 1
    assert len(content) > 19 * 1024 * 1024 and rows > 150_000
    ann = leads_stack.session("ann", "rep", teams=["east"])
    r = ann.post(f"{leads_stack.base_url}/leads/import", files={"file": ("big.csv", content, "text/csv")}, timeout=120)
    assert r.status_code == 202, r.text
    job = r.json()["job_id"]
    assert ann.get(f"{leads_stack.base_url}/lead-imports/{job}").json()["rows"] == rows
    # The first chunk is where a whole-file parse would have happened; 20 chunks show it stays flat.
    wait_for(lambda: ann.get(f"{leads_stack.base_url}/lead-imports/{job}").json()["rows_done"] >= 20_000,
             timeout=300, what="20 chunks imported")
    peak = _peak_rss_mib(leads_stack.worker.pid)
    print(f"{len(content) / 2**20:.1f} MiB, {rows} rows: worker peak RSS {peak:.0f} MiB after 20,000 rows")
    assert peak < LIMIT_MIB
    done = ann.get(f"{leads_stack.base_url}/lead-imports/{job}").json()
    assert done["created"] + done["merged"] + done["rejected"] == done["rows_done"]
