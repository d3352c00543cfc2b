"""Orders service: owns the product catalogue, orders and their approvals, payments, targets and
performance (CONTRACT §4). Built in steps (issue 15): the catalogue first."""
SERVICE = "orders"
