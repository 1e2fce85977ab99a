"""The code systems and identifiers the FHIR interface speaks (sources: docs/fhir.md)."""

from __future__ import annotations

from typing import Final

MOS = "https://mos.esante.gouv.fr/NOS"


def nos(name: str) -> str:
    """An ANS terminology's FHIR URI: TRE_A03-ClasseDocument → …/TRE_A03-ClasseDocument/FHIR/
    TRE-A03-ClasseDocument."""
    return f"{MOS}/{name}/FHIR/{name.replace('_', '-')}"


LOINC: Final = "http://loinc.org"
TYPE_FR: Final = nos("TRE_A05-TypeDocComplementaire")
CLASS: Final = nos("TRE_A03-ClasseDocument")
VISIBILITY: Final = nos("TRE_A07-StatutVisibiliteDocument")
CONFIDENTIALITY: Final = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
FORMAT_IHE: Final = nos("TRE_A11-IheFormatCode")
FORMAT_FR: Final = nos("TRE_A06-FormatCodeComplementaire")
NON_PS: Final = nos("TRE_A00-ProducteurDocNonPS")
PRACTICE: Final = nos("TRE_A01-CadreExercice")
SECTOR: Final = nos("TRE_R02-SecteurActivite")
PROFESSION: Final = nos("TRE_G15-ProfessionSante")
RFC3986: Final = "urn:ietf:rfc:3986"
ID_TYPES: Final = "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203"
IDNPS: Final = "urn:oid:1.2.250.1.71.4.2.1"  # national professional id: "8" + RPPS
RPPS: Final = "https://rpps.esante.gouv.fr"
# The INS (FR Core): the NIR, the temporary NIA, and the test and demonstration NIRs.
INS_SYSTEMS: Final = {
    "urn:oid:1.2.250.1.213.1.4.8": "INS-NIR",
    "urn:oid:1.2.250.1.213.1.4.9": "INS-NIA",
    "urn:oid:1.2.250.1.213.1.4.10": "INS-NIR-TEST",
    "urn:oid:1.2.250.1.213.1.4.11": "INS-NIR-DEMO",
}
INS_NIR: Final = "urn:oid:1.2.250.1.213.1.4.8"
MHD_LIST_TYPES: Final = "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes"
MHD_EXT: Final = "https://profiles.ihe.net/ITI/MHD/StructureDefinition"
PDSM: Final = "https://interop.esante.gouv.fr/ig/fhir/pdsm"
PROFILE_DOCUMENT: Final = f"{PDSM}/StructureDefinition/pdsm-comprehensive-document-reference"
PROFILE_SUBMISSION: Final = f"{PDSM}/StructureDefinition/pdsm-submissionset-comprehensive"
PROFILE_BUNDLE: Final = f"{PDSM}/StructureDefinition/pdsm-comprehensive-provide-document-bundle"
IS_ARCHIVED: Final = f"{PDSM}/StructureDefinition/pdsm-ext-is-archived"

# Our catalogue's type codes → (system, code, display); LOINC where the code is one.
FR_TYPES: Final = {
    "CERT_DECL": ("CERT_DECL", "Certificat, déclaration"),
    "REMB": ("REMB", "Historique des remboursements"),
    "EXPPAT_3": ("EXPPAT_3", "Directives anticipées"),
    # no DOC_PATIENT in TRE_A05: a document the patient adds is "another patient document"
    "DOC_PATIENT": ("EXPPAT_2", "Autre document du patient"),
}
FROM_FR_TYPE: Final = {code: ours for ours, (code, _) in FR_TYPES.items()}

# Our sections → the XDS class code (TRE_A03), as the ANS maps the DMP's types to classes.
SECTION_CLASS: Final = {
    "synthese": ("11", "Synthèse"),
    "traitements": ("42", "Prescription"),
    "analyses": ("10", "Compte rendu"),
    "imagerie": ("31", "Imagerie médicale"),
    "comptes_rendus": ("10", "Compte rendu"),
    "prevention": ("52", "Certificat, déclaration"),
    "certificats": ("52", "Certificat, déclaration"),
    "remboursements": ("60", "Données de remboursement"),
    "espace_personnel": ("90", "Autres documents déposés par le patient"),
}
# A dispensation is its own class.
TYPE_CLASS: Final = {"60593-1": ("43", "Dispensation")}

VISIBILITY_DISPLAY: Final = {
    "MASQUE_PS": "Masqué aux professionnels de santé",
    "INVISIBLE_PATIENT": "Non visible par le patient",
    "INVISIBLE_REPRESENTANTS_LEGAUX": "Non visible par représentants légaux du patient",
}

# The format a document has when its submitter gave none, by type, then by media type.
TYPE_FORMAT: Final = {
    "REMB": (FORMAT_FR, "urn:asip:ci-sis:hr:2019", "Données de remboursement"),
    "EXPPAT_3": (
        FORMAT_FR,
        "urn:asip:ci-sis:idap:2011",
        "Information et directives anticipées du patient",
    ),
}
MIME_FORMAT: Final = {
    "application/pdf": (
        FORMAT_IHE,
        "urn:ihe:iti:xds-sd:pdf:2008",
        "Document à corps non structuré en Pdf/A-1",
    ),
    "text/plain": (
        FORMAT_IHE,
        "urn:ihe:iti:xds-sd:text:2008",
        "Document à corps non structuré en texte brut",
    ),
    "image/jpeg": (
        FORMAT_IHE,
        "urn:ihe:iti-fr:xds-sd:jpeg:2010",
        "Document à corps non structuré en JPEG",
    ),
    "image/tiff": (
        FORMAT_IHE,
        "urn:ihe:iti-fr:xds-sd:tiff:2010",
        "Document à corps non structuré en TIFF",
    ),
}
OTHER_FORMAT: Final = (
    FORMAT_FR,
    "urn:asipSante:modelesHorsProfils:2011",
    "Document non référencé IHE ou CI-SIS",
)
EXP_PATIENT: Final = (NON_PS, "EXP_PATIENT", "Expression personnelle du patient")
AMBULATORY: Final = (PRACTICE, "AMBULATOIRE", "Ambulatoire")
PRIVATE_PRACTICE: Final = (SECTOR, "SA07", "Cabinet individuel")
PROFESSIONS: Final = {
    "10": "Médecin",
    "21": "Pharmacien",
    "40": "Chirurgien-Dentiste",
    "50": "Sage-Femme",
    "60": "Infirmier",
    "70": "Masseur-Kinésithérapeute",
}
