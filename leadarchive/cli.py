"""``leadarchive``: one console script for the API, the worker, Flower and the operator's tools."""

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
err = Console(stderr=True)


def _database_url(args: argparse.Namespace) -> str:
    url: str = args.database_url or get_settings().database_url
    if not url:
        raise SystemExit("no database: set LEADARCHIVE_DATABASE_URL or pass --database-url")
    return url


def _api(args: argparse.Namespace) -> int:
    import uvicorn

    uvicorn.run(
        "api.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        ssl_certfile=args.certfile,
        ssl_keyfile=args.keyfile,
        proxy_headers=True,
        access_log=False,
    )
    return 0


def _worker(args: argparse.Namespace) -> int:
    from tasks.celery_app import QUEUE
    from worker.app import app

    argv = ["worker", "--loglevel", args.loglevel, "--concurrency", str(args.concurrency)]
    # -E: task events on, so Flower sees every task; one queue, this project's own.
    app.worker_main([*argv, "-E", "-Q", QUEUE])
    return 0


def _flower(args: argparse.Namespace) -> int:
    auth = get_settings().flower_basic_auth
    if ":" not in auth:
        err.print("set LEADARCHIVE_FLOWER_BASIC_AUTH=user:password: Flower never runs open")
        return 2
    from worker.app import app

    app.start(["flower", f"--address={args.host}", f"--port={args.port}", f"--basic-auth={auth}"])
    return 0


def _keys_new(args: argparse.Namespace) -> int:
    from api.auth import hash_key, new_key

    key = new_key()
    console.print(f"API key for {args.name} (shown once, store it now):")
    console.print(key, highlight=False, soft_wrap=True)
    console.print("Add this entry to LEADARCHIVE_API_KEYS (comma-separated):")
    console.print(f"{args.name}:{hash_key(key)}", highlight=False, soft_wrap=True)
    return 0


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

    api = commands.add_parser("api", help="run the HTTP API")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8000)
    api.add_argument("--certfile", help="serve HTTPS with this certificate (PEM)")
    api.add_argument("--keyfile", help="the certificate's private key (PEM)")
    api.set_defaults(handler=_api)

    worker = commands.add_parser("worker", help="run a Celery worker (events on)")
    worker.add_argument("--concurrency", type=int, default=2)
    worker.add_argument("--loglevel", default="INFO")
    worker.set_defaults(handler=_worker)

    flower = commands.add_parser("flower", help="run Flower, with basic auth")
    flower.add_argument("--host", default="127.0.0.1")
    flower.add_argument("--port", type=int, default=5555)
    flower.set_defaults(handler=_flower)

    keys = commands.add_parser("keys", help="manage API keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    new = key_commands.add_parser("new", help="print a new key once, and its name:sha256 line")
    new.add_argument("name")
    new.set_defaults(handler=_keys_new)

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
