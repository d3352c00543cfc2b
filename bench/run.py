"""`make bench`: every benchmark, each writing bench/results/<name>.json with its baseline ratio."""
from __future__ import annotations

import argparse
import json

from bench import ingest

BENCHMARKS = {"ingest": ingest.run}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("names", nargs="*", default=list(BENCHMARKS), help=f"any of {sorted(BENCHMARKS)}")
    parser.add_argument("--messages", type=int, default=100_000)
    args = parser.parse_args()
    for name in args.names:
        result = BENCHMARKS[name](args.messages)
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
