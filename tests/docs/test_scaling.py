"""docs/scaling.md's figures are what `make capacity` computes from the recorded benchmarks:
a benchmark recorded again, or a change of the load's figures, shows here until the plan is
written again."""

from __future__ import annotations

from pathlib import Path

from bench.capacity import plan

SCALING = Path(__file__).parents[2] / "docs" / "scaling.md"


def test_the_plan_in_the_docs_is_the_one_the_recorded_benchmarks_give() -> None:
    text = SCALING.read_text()
    figures = plan()
    cores = figures["cores_at_peak"]
    for process in ("gateway", "dossier", "consent", "notify", "audit"):
        assert f"| {process} | {cores[process]} |" in text, process
    assert f"**{figures['cores_ours']}**" in text
    assert f"| database (FerretDB + PostgreSQL) | {figures['cores_database_ferretdb']} |" in text
    year = figures["storage_per_year"]
    assert f"| document content | {round(year['documents_content_tb'])} TB |" in text
    assert f"| {year['documents_metadata_tb']:.1f} TB |" in text
    assert f"| audit log | {year['audit_log_tb']} TB |" in text
    assert f"| {year['audit_hashes_gb']:.0f} GB |" in text
    jetstream = figures["jetstream"]
    assert f"{jetstream['disk_gb_per_server']} GB per server" in text
    assert f"{jetstream['bytes_per_document']:,} B of stream per document" in text
    peak = figures["load"]["peak_per_s"]
    assert f"**{peak['submit']:.0f} documents added and {peak['consult_50']:.0f} lists" in text
    sequencer = figures["audit_sequencer"]
    assert f"{sequencer['append_per_s_measured']:,.0f} entries a second" in text


def test_every_collection_the_services_store_in_has_a_shard_key_or_says_why_not() -> None:
    text = SCALING.read_text()
    section = text.split("## Shard keys", 1)[1].split("\n## ", 1)[0]
    for name in ("accounts", "dossiers", "listings", "chunks", "trail", "notifications",
                 "claims", "conversations", "appointments", "consents", "tiles"):  # fmt: skip
        assert name in section, name
