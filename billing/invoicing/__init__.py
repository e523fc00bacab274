"""Invoicing: invoice drafts, the monthly close and its schedule, the upcoming invoice, exports."""
