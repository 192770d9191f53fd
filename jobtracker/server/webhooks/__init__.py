"""Webhooks: subscriptions over HTTP and the dispatcher that delivers them from the log."""
