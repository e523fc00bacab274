"""Prepaid credits: grants per account, the balance, holds for running requests, the draw-down."""
