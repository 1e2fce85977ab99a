"""Consent: who may see what in a dossier."""
