"""Spend limits: monthly soft (alert) and hard (stop) limits per account and per API key."""
