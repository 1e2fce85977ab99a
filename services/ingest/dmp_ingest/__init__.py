"""Ingest: the insurer's two years of claim history."""
