"""The audit trail: who changed what and when, projected from the commands' events (each carries the
principal the API authenticated) and queried by ``GET /api/v1/audit/``."""
