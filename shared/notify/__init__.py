"""Telling people: Teams, Slack and signed generic webhooks, and the read-only status page."""
