"""The document type catalogue (type_code → label, section), loaded from a data file."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from dmp_kit.errors import InvalidArgument


@dataclass(frozen=True)
class DocumentType:
    code: str
    label: str
    section: str


@dataclass(frozen=True)
class Catalogue:
    sections: dict[str, str]
    types: dict[str, DocumentType]
    # record name (profile, emergency_contacts, advance_directives) → the type it counts as
    records: dict[str, DocumentType] = field(default_factory=dict)

    def type(self, code: str, field: str = "type_code") -> DocumentType:
        found = self.types.get(code)
        if found is None:
            raise InvalidArgument(
                f"unknown document type {code!r}", field=field, slug="unknown-type-code"
            )
        return found

    def section(self, name: str, field: str = "section") -> str:
        if name not in self.sections:
            raise InvalidArgument(f"unknown section {name!r}", field=field, slug="unknown-section")
        return name

    @classmethod
    def parse(cls, text: str) -> Catalogue:
        data = tomllib.loads(text)
        sections = {str(k): str(v) for k, v in data["sections"].items()}
        types = {}
        for code, entry in data["types"].items():
            if entry["section"] not in sections:
                raise ValueError(f"type {code}: unknown section {entry['section']!r}")
            types[code] = DocumentType(code, str(entry["label"]), str(entry["section"]))
        records = {}
        for name, code in data.get("records", {}).items():
            if code not in types:
                raise ValueError(f"record {name}: unknown type {code!r}")
            records[str(name)] = types[code]
        return cls(sections, types, records)


def load_catalogue(path: str = "") -> Catalogue:
    """The catalogue from `path`, or the one shipped with the platform."""
    if path:
        return Catalogue.parse(Path(path).read_text(encoding="utf-8"))
    shipped = resources.files("dmp_kit") / "data" / "catalogue.toml"
    return Catalogue.parse(shipped.read_text(encoding="utf-8"))
