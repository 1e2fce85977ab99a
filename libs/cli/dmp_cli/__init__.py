"""`dmp`: the operators' command. Each area adds its own subcommands.

dmp audit verify …     re-read the whole audit log (dmp_audit.cli)
dmp ingest FILE …      send a claims file to the platform (dmp_ingest.cli)
"""

from __future__ import annotations

import argparse
import sys

from dmp_audit import cli as audit_cli
from dmp_ingest import cli as ingest_cli


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="dmp", description="DMP platform tools")
    areas = parser.add_subparsers(dest="area", required=True)
    audit_cli.add_commands(areas)
    ingest_cli.add_commands(areas)
    args = parser.parse_args(argv)
    sys.exit(args.run(args))
