"""Audit: the append-only, tamper-evident access trace."""
