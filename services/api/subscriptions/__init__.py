"""What integrations subscribe to: which events a filter selects, which namespace and environment an
event concerns, who may read it, and the JSON document each event is sent as (the live stream and
webhooks share all of it)."""
