"""Pricing: price schedule versions (frozen data), their files and stored documents, the schedules
in the database, rating the ledger, the price sheet, a request's cost, budget caps, cost estimates."""
