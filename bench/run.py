"""`make bench`: every benchmark, each writing bench/results/<name>.json with its baseline ratio."""
from __future__ import annotations

import argparse
import json

from bench import edge, ingest, leads_list, look_alike, notifications, opportunities, orders, performance, visits

BENCHMARKS = {"ingest": ingest.run, "leads_list": leads_list.run,
              "opportunities": opportunities.run, "look_alike": look_alike.run, "edge": edge.run,
              "orders": orders.run, "performance": performance.run, "notifications": notifications.run,
              "visits": visits.run}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("names", nargs="*", default=list(BENCHMARKS), help=f"any of {sorted(BENCHMARKS)}")
    parser.add_argument("--messages", type=int, default=100_000, help="ingest: inbound messages")
    parser.add_argument("--leads", type=int, default=1_000_000, help="leads_list: leads in the table")
    parser.add_argument("--edge-leads", type=int, default=200_000, help="edge: leads in the table")
    parser.add_argument("--opportunities", type=int, default=200_000, help="opportunities: open ones in the table")
    parser.add_argument("--orders", type=int, default=200_000, help="orders: orders in the table (5 lines each)")
    parser.add_argument("--performance-orders", type=int, default=500_000,
                        help="performance: counted orders already applied (2,000,000 activities with them)")
    parser.add_argument("--notification-events", type=int, default=100_000,
                        help="notifications: lead.assigned events drained (twice: with and without e-mail)")
    parser.add_argument("--notification-replicas", type=int, default=1,
                        help="notifications: worker processes sharing the consumer group")
    parser.add_argument("--visit-reps", type=int, default=1_000, help="visits: reps (8 visits a day, 60 working days)")
    parser.add_argument("--look-alike-seconds", type=int, default=30, help="look_alike: seconds of writing per phase kind")
    args = parser.parse_args()
    sizes = {"ingest": args.messages, "leads_list": args.leads,
             "opportunities": args.opportunities, "look_alike": args.look_alike_seconds, "edge": args.edge_leads,
             "orders": args.orders, "performance": args.performance_orders,
             "notifications": args.notification_events, "visits": args.visit_reps}
    for name in args.names:
        result = (notifications.run(sizes[name], replicas=args.notification_replicas) if name == "notifications"
                  else BENCHMARKS[name](sizes[name]))
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
