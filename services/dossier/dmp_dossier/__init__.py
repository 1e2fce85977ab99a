"""Dossier: the patient's record — dossiers, documents, profile, contacts, directives."""
