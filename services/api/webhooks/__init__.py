"""Webhooks: every matching event POSTed, signed, to an integration's URL, retried with backoff,
each attempt recorded as an event.

The API registers them (``routes/webhooks.py``: requests, target checks, the secret encrypted into
``webhook.registered``) and projects them and their delivery log into PostgreSQL; the delivering
process (``python -m envstore.api.webhooks``) reads each webhook's events from a durable JetStream
consumer of its own, so a restart loses no delivery."""
