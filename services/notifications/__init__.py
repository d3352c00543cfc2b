"""Notifications service: owns notifications, reminders and the agenda, preferences, webhooks and
deliveries (CONTRACT §4 "Notifications"). It learns everything from the other services' topics and
tells people in the app, by e-mail and by webhook."""
SERVICE = "notifications"
