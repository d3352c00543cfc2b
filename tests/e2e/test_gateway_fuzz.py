"""Fuzzing every operation the gateway documents (/openapi.json, services' routes included), through
the gateway, with schemathesis: no 500 for anything a client sends, and every documented response
matches its own schema."""
from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from xml.etree import ElementTree

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

# Per operation (about 70), as the admin, who reaches every route. Fewer than the 25 it had before
# schemathesis' every check ran for a manager and a rep too (test_the_document_tells_the_truth).
FUZZ_EXAMPLES = 12


@pytest.fixture(scope="module")
def fuzz_target(crm):
    return crm, crm.token("admin", "admin-password-for-tests")


@pytest.fixture(scope="module")
def crm_schema(crm):
    return schemathesis.openapi.from_url(f"{crm.url}/openapi.json")


def test_the_document_covers_the_running_services(crm_schema):
    labels = {op.ok().label for op in crm_schema.get_all_operations()}
    assert {"GET /api/v1/leads", "POST /api/v1/leads", "PATCH /api/v1/users/{user_id}", "GET /api/v1/reports/funnel",
            "POST /api/v1/auth/token"} <= labels


def test_every_operation_has_a_summary_and_documents_its_errors_as_problems(crm):
    doc = requests.get(f"{crm.url}/openapi.json", timeout=30).json()
    operations = [(method.upper(), path, op) for path, ops in doc["paths"].items() for method, op in ops.items()
                  if method in ("get", "post", "put", "patch", "delete")]
    assert len(operations) >= 60
    assert [f"{m} {p}" for m, p, op in operations if not op.get("summary")] == []
    responses = doc["components"]["responses"]
    for method, path, op in operations:
        default = op["responses"]["default"]
        default = responses[default["$ref"].rsplit("/", 1)[1]] if "$ref" in default else default
        assert list(default["content"]) == ["application/problem+json"], f"{method} {path}"


def test_no_operation_fails_or_breaks_its_schema(crm_schema, fuzz_target):
    # One hypothesis run per operation, all failures reported together. (schemathesis' pytest
    # plugin, from_fixture, does not work with pytest 9 yet.)
    crm, token = fuzz_target
    failures, operations = [], 0
    for result in crm_schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy())
        @settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def fuzz(case):
            case.call_and_validate(base_url=crm.url, headers={"Authorization": f"Bearer {token}"},
                                   checks=[not_a_server_error, response_schema_conformance], timeout=30)

        try:
            fuzz()
        except Exception as exc:
            failures.append(f"{operation.label}: {str(exc)[:1500]}")
    assert operations >= 20
    assert failures == [], "\n\n".join(failures)


# ---- the document tells the truth (issue 13): schemathesis' every check, as a manager and as a rep ----------
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
CONFIG = Path(__file__).with_name("schemathesis.toml")
TRUTH_EXAMPLES = 8  # per operation and phase
# One operation at a time: on two cores, side by side (4 workers) took as long (schemathesis itself
# is the busy process), and a sequential run is the same run every time.
TRUTH_WORKERS = 1
# What a schema cannot say, described in the document's words and listed in the note: a
# request the schema allows may still be refused for these reasons, and for no other.
DOCUMENTED_RULES = {
    "cursor": r"invalid cursor",  # opaque: only a next_cursor this API issued
    "company or contact": r"a lead needs a company or a contact name",
    "team or user": r"give exactly one of team_id or user_id",
    "If-Match": r"the record changed since you read it|send If-Match",  # the ETag you last read
    "one line per product": r"each product once",
    "one entry per member": r"a user is listed twice",
    "live users": r"no active rep or manager with that id|unknown or inactive|hand over to an active rep or manager",
    "a text CSV": r"the file is neither UTF-8 nor GB18030 text|the file is empty|not a text CSV",
    # orders (issue 15): what the catalogue, the account and the order itself decide
    "an account you can see": r"no such account",
    "products in the catalogue": r"some lines cannot be sold|an order is in one currency",
    "what an order can hold": r"beyond what an order can hold",
    "known order types": r"no order type",
    "a plan adding up to the total": r"the instalments add up to the order's total|one instalment per due date",
    "payments within what is owed": r"more than is outstanding|a payment is recorded when it is made|"
                                    r"a payment is more than zero",
    "a rejection says why": r"say why you reject it",
    "unique keys": r"rule keys are unique|type keys are unique|the standard type stays",
    # performance (issue 16)
    "a subject of your teams": r"no such team|no such user|no such subject among your teams",
    "a distribution adding up": r"a monthly target has no distribution|months outside|the shares total|"
                                r"shares are not negative|a month such as 2026-11",
    "weights totalling 100": r"the weights total 100|each metric once",
    "plans and rules that hold together": r"the commission plans do not hold together|"
                                          r"the alert rules do not hold together",
    "percentages within their range": r"from \d+ to \d+",
    # notifications (issue 17)
    "an agenda window of at most 62 days": r"`to` must be after `from`, and at most 62 days after it",
    "a webhook target the CRM will call": r"an https URL is needed|is not a public address|credentials in the URL|"
                                          r"not a URL|does not resolve",
    "a deliverable address and a real time zone": r"an e-mail address at a public domain name|not a time zone name|"
                                                  r"quiet hours must not start and end at the same time",
    # the rep's day (issue 18)
    "a visit to one record the rep works": r"a visit is to an account or to a lead|a contact belongs to an account|"
                                           r"no such contact on this account|the rep does not work this account|"
                                           r"the rep does not hold this lead",
    "a visit's day and times": r"that day is over|plans reach a year ahead|a check-in is for what happened|"
                               r"a visit is checked in on its own day|the next contact comes after this one|"
                               r"that is when it is planned already|give both latitude and longitude",
    "a report's day and accounts": r"that day has not begun|a market entry names an unknown account",
    "a week that exists": r"has no such week",
}


def _schemathesis(crm, token: str, report_dir: Path) -> tuple[int, str, list[tuple[str, str]]]:
    """One `schemathesis run --checks all` through the gateway; (exit code, output, [(operation, failure)])."""
    run = subprocess.run(
        [str(SCHEMATHESIS), "--no-color", "--config-file", str(CONFIG), "run", f"{crm.url}/openapi.json",
         "--checks", "all", "-H", f"Authorization: Bearer {token}", "--max-examples", str(TRUTH_EXAMPLES),
         "--seed", "13", "--workers", str(TRUTH_WORKERS), "--report", "junit", "--report-dir", str(report_dir)],
        # In its own folder: schemathesis keeps a cache of past failures (.schemathesis/) in the working
        # directory and replays them first, which would make one run depend on the last.
        capture_output=True, text=True, timeout=900, cwd=report_dir)
    failures = []
    for report in report_dir.glob("*.xml"):
        for case in ElementTree.parse(report).getroot().iter("testcase"):  # noqa: S314 - our own tool's report
            failures += [(case.attrib["name"], f.text or "") for f in case if f.tag in ("failure", "error")]
    return run.returncode, run.stdout[-6000:], failures


@pytest.mark.parametrize("who", ["mgr-east", "ann"])
def test_the_document_tells_the_truth(crm, who, tmp_path):
    """No server error, no response off its schema, no undocumented status or content type, no request
    the schema forbids accepted; a request it allows is refused only for a documented rule."""
    code, output, failures = _schemathesis(crm, crm.token(who), tmp_path)
    assert "API Operations" in output, output  # it ran
    unexplained, explained_by = [], Counter()
    for operation, text in failures:
        for one in re.split(r"\n(?=\d+\. Test Case ID: )", text):
            checks = set(re.findall(r"^- (ST\d{3}) ", one, flags=re.M))
            if not checks:
                continue
            rules = [name for name, rule in DOCUMENTED_RULES.items() if re.search(rule, one)]
            if checks == {"ST202"} and rules:
                explained_by[rules[0]] += 1
            else:
                unexplained.append(f"{operation}: {one[:1500]}")
    print(f"{who}: schema-valid requests refused by a documented rule: {dict(explained_by)}")
    assert unexplained == [], "\n\n".join(unexplained)
    assert code in (0, 1), output  # 1: only the documented rejections above
