"""Leads service: owns leads, their activities, and the rules that score and assign them."""
SERVICE = "leads"
