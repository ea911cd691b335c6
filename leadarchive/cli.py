"""``leadarchive``: the one console script (more commands arrive with the API and worker)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from rich.console import Console

from tasks.db import make_engine
from tasks.errors import LeadArchiveError
from tasks.schema import inspect_tables
from tasks.seed import DEMO_LIST_ID, seed_demo
from tasks.settings import get_settings

console = Console()


def _database_url(args: argparse.Namespace) -> str:
    url: str = args.database_url or get_settings().database_url
    if not url:
        raise SystemExit("no database: set LEADARCHIVE_DATABASE_URL or pass --database-url")
    return url


def _seed_demo(args: argparse.Namespace) -> int:
    engine = make_engine(_database_url(args))
    with engine.connect() as conn:
        loaded = seed_demo(conn, args.count, list_id=args.list_id, first_lead_id=args.first_lead_id)
    console.print(f"loaded {loaded} demo leads into list {args.list_id}")
    return 0


def _check(args: argparse.Namespace) -> int:
    engine = make_engine(_database_url(args))
    with engine.connect() as conn:
        try:
            pair = inspect_tables(conn)
        except LeadArchiveError as exc:
            console.print(f"[red]not ready:[/red] {exc}")
            return 1
    console.print(
        f"ok: {len(pair.columns)} columns match; vicidial_list is {pair.live_engine},"
        f" vicidial_list_archive is {pair.archive_engine}"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="leadarchive", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    seed = commands.add_parser("seed-demo", help="create a dummy list and load N leads")
    seed.add_argument("--count", type=int, default=500)
    seed.add_argument("--list-id", type=int, default=DEMO_LIST_ID)
    seed.add_argument("--first-lead-id", type=int, default=1)
    seed.add_argument("--database-url")
    seed.set_defaults(handler=_seed_demo)

    check = commands.add_parser("check", help="verify the archive table and its schema")
    check.add_argument("--database-url")
    check.set_defaults(handler=_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; the exit code says whether it worked."""
    args = build_parser().parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
