"""The FHIR R4 interface (IHE MHD as profiled by the ANS's PDSm): a translation of the
gateway's own calls, so every rule stays in consent and dossier."""
