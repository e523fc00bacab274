"""Payments: collecting invoices through Stripe (the only subpackage that imports ``stripe``)."""
