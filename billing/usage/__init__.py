"""Usage: reading the ledger into buckets (``GET /v1/usage``), tallies, the dashboard's summary, the
operators' per-account overview and what the prefix cache saved."""
