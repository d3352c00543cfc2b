"""Opportunities service: owns accounts, contacts, opportunities and their pipeline stages,
account and opportunity activities, and expenses."""
SERVICE = "opportunities"
