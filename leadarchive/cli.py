"""``leadarchive``: one console script for the API, the worker, Flower and the operator's tools."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import sqlalchemy
from rich.console import Console
from rich.markup import escape
from sqlalchemy.exc import DBAPIError

from leadarchive.client import DEFAULT_WINDOW
from tasks.db import make_engine
from tasks.errors import LeadArchiveError, SeedError
from tasks.schema import ARCHIVE_TABLE, inspect_tables
from tasks.seed import DemoList, remove_demo, seed_demo
from tasks.startup import checked_settings, service_settings, undecided_office_hours
from worker import main as worker_main

if TYPE_CHECKING:
    import httpx2 as httpx

# soft_wrap: no hard line breaks, so output can be grepped and copied.
console = Console(soft_wrap=True)
err = Console(stderr=True)


def _database_url(args: argparse.Namespace) -> str:
    # A malformed setting stops the operator's tools too, named and never echoed.
    url: str = args.database_url or checked_settings().database_url
    if not url:
        raise SystemExit("no database: set LEADARCHIVE_DATABASE_URL or pass --database-url")
    return url


def _api(args: argparse.Namespace) -> int:
    import uvicorn

    from tasks.logs import configure_logging

    # A bad setting or undecided office hours stop the process here, before uvicorn's first line.
    service_settings()
    configure_logging()
    uvicorn.run(
        "api.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        ssl_certfile=args.certfile,
        ssl_keyfile=args.keyfile,
        proxy_headers=True,
        access_log=False,
        log_config=None,
        # Past this many requests at once, answer 503 at once rather than queue them all.
        limit_concurrency=args.limit_concurrency,
        backlog=2048,
    )
    return 0


def _run(args: argparse.Namespace) -> int:
    """The API and a worker together on one machine; the embedded default when unconfigured."""
    import uvicorn

    from api.app import create_app
    from api.auth import hash_key, new_key
    from tasks.requests import SEED_EXAMPLE

    settings = service_settings()
    env = dict(os.environ)
    key = ""
    if settings.embedded:
        _private_folder(settings.data_dir)
        _prepare_embedded(settings.database_url, args.demo_leads)
        if not settings.api_keys:
            key_file = settings.data_dir / "demo-api-key"
            if not key_file.exists():
                _write_private(key_file, new_key() + "\n")
            key = key_file.read_text(encoding="ascii").strip()
            settings = settings.model_copy(update={"api_keys": f"demo:{hash_key(key)}"})
    if not settings.api_keys:
        err.print("set LEADARCHIVE_API_KEYS (make one with `leadarchive keys new NAME`)")
        return 2
    # The worker resolves exactly what this process resolved.
    env.update(
        LEADARCHIVE_DATABASE_URL=settings.database_url,
        LEADARCHIVE_BROKER_URL=settings.broker_url,
        LEADARCHIVE_RESULT_BACKEND=settings.result_backend,
        LEADARCHIVE_DATA_DIR=str(settings.data_dir.resolve()),
        LEADARCHIVE_API_KEYS=settings.api_keys,
        # Unset is only allowed for the embedded demo, where it means what "" says.
        LEADARCHIVE_OFFICE_HOURS=settings.office_hours or "",
        LEADARCHIVE_TIMEZONE=settings.timezone,
    )
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "leadarchive.cli",
            "worker",
            "--concurrency",
            "1",
            "--loglevel",
            "WARNING",
        ],
        env=env,
    )
    try:
        # A SIGTERM to this process alone (`kill PID`, a supervisor's stop) ends it here once
        # the API has shut down (uvicorn raises the signal again when it is done), so that the
        # worker is stopped too instead of being left running on its own.
        signal.signal(signal.SIGTERM, _stop_on_sigterm)
        url = f"http://{args.host}:{args.port}"
        console.print(f"LeadArchive is listening on {url}  (docs: {url}/docs)")
        if settings.embedded:
            console.print(f"Embedded demo: data in {settings.data_dir.resolve()}")
        if key:
            console.print(f"Demo API key: {key}", highlight=False, soft_wrap=True)
            body = json.dumps(SEED_EXAMPLE)
            console.print(
                f"Try: curl -s -X POST {url}/vicidial/leads/archive -H 'Authorization: Key={key}'"
                f" -H 'Content-Type: application/json' -d '{body}'",
                highlight=False,
                soft_wrap=True,
            )
        uvicorn.run(create_app(settings), host=args.host, port=args.port, access_log=False)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut this short
        worker.terminate()
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    return 0


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def _private_folder(folder: Path) -> None:
    """Make the embedded demo's folder readable by its owner only, and everything this process
    and the worker it starts create from now on (umask 077): the leads, the job store, the
    broker's messages, the results and the demo key are nobody else's to read."""
    os.umask(0o077)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)  # one made by an earlier version, or with another umask


def _write_private(path: Path, text: str) -> None:
    """Create ``path`` as 0600 from its first byte on (never readable by others, not even
    between a write and a chmod)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="ascii") as out:
        out.write(text)


def _prepare_embedded(database_url: str, demo_leads: int) -> None:
    """Create the SQLite Vicidial tables with a demo list, once."""
    from tasks.ddl import create_vicidial_tables

    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            exists = conn.exec_driver_sql(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'vicidial_list'"
            ).first()
            if exists is None:
                create_vicidial_tables(conn)
                if demo_leads > 0:
                    # An empty database: the demo's lead IDs are 1..demo_leads.
                    seed_demo(conn, demo_leads)
    finally:
        engine.dispose()


def _flower(args: argparse.Namespace) -> int:
    settings = service_settings()
    problem = settings.flower_auth_problem()
    if problem:
        err.print(problem)
        return 2
    auth = settings.flower_basic_auth
    from worker.app import app

    app.start(["flower", f"--address={args.host}", f"--port={args.port}", f"--basic-auth={auth}"])
    return 0


def _client_key(args: argparse.Namespace) -> str:
    """The client's API key (--key, else $LEADARCHIVE_CLIENT_KEY); "" said on stderr."""
    key: str = args.key or os.environ.get("LEADARCHIVE_CLIENT_KEY", "")
    if not key:
        err.print("give the API key with --key or LEADARCHIVE_CLIENT_KEY")
    return key


def _archive_flags(args: argparse.Namespace) -> dict[str, bool]:
    """The request's action flags from --no-insert, --no-update, --delete, --dry-run."""
    return {
        "insert_leads": not args.no_insert,
        "update_leads": not args.no_update,
        "delete_leads": args.delete,
        "dry_run": args.dry_run,
    }


def _http(args: argparse.Namespace) -> httpx.Client:
    """The client's HTTP session with the API at --url."""
    import httpx2 as httpx

    return httpx.Client(base_url=args.url, verify=not args.insecure, timeout=30)


def _submit(args: argparse.Namespace) -> int:
    from leadarchive.client import (
        ARCHIVE_PATH,
        DEARCHIVE_PATH,
        EXIT_FAILED,
        SubmitError,
        Submitter,
        print_summary,
        read_lead_ids,
        submit_all,
    )

    key = _client_key(args)
    if not key:
        return EXIT_FAILED
    try:
        if args.file == "-":
            ids = read_lead_ids(sys.stdin)
        elif args.file:
            with open(args.file, encoding="utf-8") as source:
                ids = read_lead_ids(source)
        else:
            ids = read_lead_ids(args.lead_ids)
    except (OSError, ValueError) as exc:
        err.print(f"cannot read lead IDs: {exc}")
        return EXIT_FAILED
    if not ids:
        err.print("no lead IDs given")
        return EXIT_FAILED
    flags = _archive_flags(args)
    if args.dearchive:
        if args.no_insert or args.no_update or args.delete:
            err.print("--dearchive restores leads: --no-insert, --no-update, --delete do not apply")
            return EXIT_FAILED
        flags = {"dry_run": args.dry_run}
    with _http(args) as http:
        try:
            summary = submit_all(
                Submitter(
                    http,
                    key,
                    max_wait=args.max_wait,
                    path=DEARCHIVE_PATH if args.dearchive else ARCHIVE_PATH,
                ),
                ids,
                flags,
                batch_size=args.batch_size,
                window=args.window,
                salt=args.run_id,
            )
        except SubmitError as exc:
            err.print(f"[red]{exc}[/red]")
            return EXIT_FAILED
    if args.json:
        sys.stdout.write(json.dumps(summary.as_json(), indent=2) + "\n")
    else:
        print_summary(summary)
    return summary.exit_code()


def _select(args: argparse.Namespace) -> int:
    from leadarchive.client import (
        EXIT_FAILED,
        EXIT_INTERRUPTED,
        SELECTION_FILTERS,
        Selector,
        StoppedWaiting,
        SubmitError,
        print_selection,
        select,
        selection_exit_code,
    )

    key = _client_key(args)
    if not key:
        return EXIT_FAILED
    filters = {name: getattr(args, name) for name in SELECTION_FILTERS}
    filters = {name: value for name, value in filters.items() if value is not None}
    if not filters:
        err.print(
            "give at least one filter: --list-ids, --campaign-ids, --statuses,"
            " --entry-date-before or --last-call-before",
            soft_wrap=True,
        )
        return EXIT_FAILED
    with _http(args) as http:
        try:
            job = select(
                Selector(http, key, max_wait=args.max_wait),
                {**filters, **_archive_flags(args)},
                show_progress=not args.json,
            )
        except SubmitError as exc:
            err.print(f"[red]{escape(str(exc))}[/red]", highlight=False, soft_wrap=True)
            return EXIT_FAILED
        except StoppedWaiting as exc:
            err.print(escape(str(exc)), highlight=False, soft_wrap=True)
            return EXIT_INTERRUPTED
        except KeyboardInterrupt:
            err.print("interrupted before the API answered")
            return EXIT_INTERRUPTED
    if args.json:
        sys.stdout.write(json.dumps(job, indent=2) + "\n")
    else:
        print_selection(job)
    return selection_exit_code(job)


def _ids(text: str) -> list[int]:
    """``--list-ids 1001,1002``: integers separated by commas."""
    values = [token.strip() for token in text.split(",") if token.strip()]
    if not values or not all(re.fullmatch("[0-9]+", value) for value in values):
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of list IDs")
    return [int(value) for value in values]


def _words(text: str) -> list[str]:
    """``--statuses NEW,NA``: values separated by commas."""
    values = [token.strip() for token in text.split(",") if token.strip()]
    if not values:
        raise argparse.ArgumentTypeError(f"{text!r} has no value")
    return values


def _moment(text: str) -> str:
    """A date (2024-01-01) or a date and time (2024-01-01T08:00:00-05:00), as ISO 8601 text."""
    from datetime import date, datetime

    try:
        return date.fromisoformat(text).isoformat()
    except ValueError:
        pass
    try:
        # A time without an offset is the office hours' zone's, as the service reads it.
        return datetime.fromisoformat(text).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date (2024-01-01) or a date and time (2024-01-01T08:00:00-05:00)"
        ) from None


def _keys_new(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from api.auth import hash_key, new_key
    from tasks.scopes import KeyScope, Lists, ScopeError, key_entry, parse_actions, parse_max
    from tasks.settings import get_settings, parse_api_keys

    try:
        scope = KeyScope(
            actions=parse_actions(args.actions, ",") if args.actions is not None else None,
            lists=Lists.parse(args.lists, ",") if args.lists is not None else None,
            max_lead_ids=parse_max(args.max) if args.max is not None else None,
        )
    except ScopeError as exc:
        err.print(f"leadarchive keys new: {escape(str(exc))}")
        return 2
    key = new_key()
    entry = key_entry(args.name, hash_key(key), scope)
    try:
        parse_api_keys(entry)  # what the service will read: the same name, hash and scope
    except ValueError:
        err.print("leadarchive keys new: a key's name is 1 to 64 of A-Z a-z 0-9 _ . @ -")
        return 2
    if scope.max_lead_ids is not None:
        try:
            limit = get_settings().max_lead_ids
        except ValidationError:
            limit = None  # this machine's settings are for `leadarchive check` to judge
        if limit is not None and scope.max_lead_ids > limit:
            err.print(
                f"leadarchive keys new: --max is above LEADARCHIVE_MAX_LEAD_IDS ({limit}):"
                " the service would refuse the entry"
            )
            return 2
    console.print(f"API key for {args.name} (shown once, store it now):")
    console.print(key, highlight=False, soft_wrap=True)
    if "&" not in entry:
        console.print("Add this entry to LEADARCHIVE_API_KEYS (comma-separated):")
    else:
        console.print(
            "Add this entry to LEADARCHIVE_API_KEYS (comma-separated; in a file a shell"
            " reads, quote the whole value: the scope has '&'):"
        )
    console.print(entry, highlight=False, soft_wrap=True, markup=False)
    return 0


def _seed_demo(args: argparse.Namespace) -> int:
    if args.remove is not None:
        if args.count is not None or args.list_id is not None or args.ids_file:
            err.print("--remove takes no --count, --list-id or --ids-file")
            return 2
        return _remove_demo(args)
    ids_file = Path(args.ids_file) if args.ids_file else None
    created_file = False
    if ids_file is not None:
        # Checked before anything is loaded: a file that cannot be written changes nothing.
        created_file = not ids_file.exists()
        try:
            with ids_file.open("a", encoding="ascii"):
                pass
        except OSError as exc:
            err.print(f"cannot write --ids-file: {escape(str(exc))}; nothing was changed")
            return 1
    engine = make_engine(_database_url(args))
    try:
        with engine.connect() as conn:
            demo = seed_demo(conn, 500 if args.count is None else args.count, list_id=args.list_id)
    except (SeedError, DBAPIError, engine.dialect.loaded_dbapi.Error) as exc:
        if ids_file is not None and created_file:
            ids_file.unlink(missing_ok=True)
        err.print(f"[red]seed-demo:[/red] {escape(str(exc))}", highlight=False)
        return 1
    finally:
        engine.dispose()
    return _print_demo(demo, ids_file)


def _print_demo(demo: DemoList, ids_file: Path | None) -> int:
    console.print(
        f"created demo list {demo.list_id} (inactive): {demo.count} dummy leads"
        " with fictional 555-01xx phone numbers",
        highlight=False,
    )
    console.print(f"lead IDs: {demo.first_lead_id}-{demo.last_lead_id}", highlight=False)
    console.print(f"remove it with: leadarchive seed-demo --remove {demo.list_id}", highlight=False)
    if ids_file is not None:
        try:
            ids_file.write_text("".join(f"{i}\n" for i in demo.lead_ids), encoding="ascii")
        except OSError as exc:
            err.print(
                f"could not write the lead IDs to {ids_file}: {escape(str(exc))}", highlight=False
            )
            return 1
        console.print(
            f"wrote the {demo.count} lead IDs to {ids_file}, one per line;"
            f" archive them with: leadarchive submit --file {ids_file} --delete",
            highlight=False,
        )
    return 0


def _remove_demo(args: argparse.Namespace) -> int:
    engine = make_engine(_database_url(args))
    try:
        with engine.connect() as conn:
            removal = remove_demo(conn, args.remove)
    except (SeedError, DBAPIError, engine.dialect.loaded_dbapi.Error) as exc:
        err.print(f"[red]seed-demo --remove:[/red] {escape(str(exc))}", highlight=False)
        return 1
    finally:
        engine.dispose()
    console.print(
        f"deleted {removal.live_deleted} dummy leads from vicidial_list and"
        f" {removal.archive_deleted} from vicidial_list_archive (list {args.remove})",
        highlight=False,
    )
    if not removal.list_removed:
        err.print(
            f"[red]kept list {args.remove}:[/red] {removal.left} of its leads are not dummies"
            " of this seed (outside its lead ID range or with a real phone number); nothing of"
            " them was deleted",
            highlight=False,
        )
        return 1
    console.print(f"removed demo list {args.remove}", highlight=False)
    return 0


def _check(args: argparse.Namespace) -> int:
    from tasks.checks import check_database

    engine = make_engine(_database_url(args))
    try:
        with engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                pair = inspect_tables(conn)
                console.print(f"ok: embedded SQLite, {len(pair.columns)} columns match")
                return 0
            report = check_database(conn)
    except LeadArchiveError as exc:
        console.print(f"[red]not ready:[/red] {exc}")
        return 1
    except Exception as exc:  # a connection failure, said in plain words
        console.print(f"[red]cannot connect:[/red] {type(exc).__name__}: {exc}")
        return 1
    finally:
        engine.dispose()
    for fact in report.facts:
        console.print(f"  {fact}", highlight=False)
    for problem in report.problems:
        console.print(f"[red]  ✗ {problem}[/red]", highlight=False)
    for advice in report.advice:
        # Plain text, no markup: a statement to copy as it is.
        console.print(advice, highlight=False, markup=False)
    settings = checked_settings()
    undecided = not args.database_url and settings.office_hours_undecided
    if undecided:
        # Not the database's readiness, but the next thing the services will refuse over.
        advice = undecided_office_hours(settings)
        console.print(
            f"[yellow]  ! api, worker and flower will not start: {advice}[/yellow]",
            highlight=False,
        )
    if not report.ready:
        console.print("[red]not ready[/red]")
    elif undecided:
        console.print("[green]the database is ready[/green]; the services wait for office hours")
    else:
        console.print("[green]ready[/green]")
    return 0 if report.ready else 1


def _create_archive_table(args: argparse.Namespace) -> int:
    from tasks.ddl import ARCHIVE_RECIPE, create_archive_table

    engine = make_engine(_database_url(args))
    try:
        with engine.connect() as conn:
            if sqlalchemy.inspect(conn).has_table(ARCHIVE_TABLE):
                err.print(
                    f"{ARCHIVE_TABLE} already exists: nothing was changed"
                    " (`leadarchive check` compares it with vicidial_list)"
                )
                return 1
            create_archive_table(conn)
    except Exception as exc:
        reason = escape(str(getattr(exc, "orig", None) or exc))
        err.print(f"[red]could not create {ARCHIVE_TABLE}:[/red] {reason}", soft_wrap=True)
        return 1
    finally:
        engine.dispose()
    console.print("created vicidial_list_archive:\n  " + ";\n  ".join(ARCHIVE_RECIPE) + ";")
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _client_options(parser: argparse.ArgumentParser) -> None:
    """The API's address and key, and the archive actions: ``submit``'s and ``select``'s."""
    parser.add_argument(
        "--url",
        default=os.environ.get("LEADARCHIVE_URL", "http://127.0.0.1:8000"),
        help="the API's address (default: $LEADARCHIVE_URL, else http://127.0.0.1:8000)",
    )
    parser.add_argument("--key", help="API key (default: $LEADARCHIVE_CLIENT_KEY)")
    parser.add_argument("--no-insert", action="store_true", help="do not copy missing leads")
    parser.add_argument("--no-update", action="store_true", help="do not refresh copies")
    parser.add_argument("--delete", action="store_true", help="delete verified live leads")
    parser.add_argument("--dry-run", action="store_true", help="report only, change nothing")


def _max_wait_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-wait",
        type=float,
        default=600.0,
        help="seconds to wait out a busy server (429/503) per request (default 600)",
    )


def _output_options(
    parser: argparse.ArgumentParser, json_help: str = "machine-readable report"
) -> None:
    parser.add_argument("--insecure", action="store_true", help="accept a self-signed cert")
    parser.add_argument("--json", action="store_true", help=json_help)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="leadarchive",
        description="One console script for the API, the worker, Flower and the operator's tools.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    api = commands.add_parser("api", help="run the HTTP API")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8000)
    api.add_argument("--certfile", help="serve HTTPS with this certificate (PEM)")
    api.add_argument("--keyfile", help="the certificate's private key (PEM)")
    api.add_argument(
        "--limit-concurrency",
        type=int,
        default=1000,
        help="connections served at once; beyond them, 503 (default 1000)",
    )
    api.set_defaults(handler=_api)

    worker = commands.add_parser("worker", help="run a Celery worker (events on)")
    worker_main.add_options(worker)
    worker.set_defaults(handler=worker_main.run)

    run = commands.add_parser(
        "run", help="the API and a worker together (the embedded demo when unconfigured)"
    )
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=8000)
    run.add_argument(
        "--demo-leads", type=int, default=500, help="the embedded demo's leads (default 500)"
    )
    run.set_defaults(handler=_run)

    flower = commands.add_parser("flower", help="run Flower, with basic auth")
    flower.add_argument("--host", default="127.0.0.1")
    flower.add_argument("--port", type=int, default=5555)
    flower.set_defaults(handler=_flower)

    submit = commands.add_parser(
        "submit",
        help="archive lead IDs through the API, in batches, with progress and a summary",
        description="Exit code: 0 all done, 1 some leads were left undeleted (with --dearchive:"
        " some leads are not live at the end), 2 a job failed.",
    )
    submit.add_argument("lead_ids", nargs="*", help="lead IDs (or use --file)")
    submit.add_argument("--file", help="read IDs from this file, or - for standard input")
    _client_options(submit)
    submit.add_argument(
        "--dearchive",
        action="store_true",
        help="restore the leads from the archive (POST /vicidial/leads/dearchive)",
    )
    submit.add_argument("--batch-size", type=int, help="default: the server's limit")
    submit.add_argument(
        "--window",
        type=_positive,
        default=DEFAULT_WINDOW,
        help=f"jobs unfinished at once (default {DEFAULT_WINDOW})",
    )
    _max_wait_option(submit)
    submit.add_argument(
        "--run-id",
        default="",
        help="submit input already submitted as new jobs: the same IDs and flags under another"
        " run ID are not matched with the earlier run's jobs (default: the input alone decides)",
    )
    _output_options(submit)
    submit.set_defaults(handler=_submit)

    select = commands.add_parser(
        "select",
        help="archive every lead a selection picks (one job on the server), with progress",
        description="Filters combine with AND, the values of one filter with OR; at least one"
        " is required. Ctrl-C asks the job to stop after its current batch and follows it to"
        " its end; a second Ctrl-C stops waiting. Exit code: 0 all done, 1 some leads were"
        " left undeleted, 2 refused, failed or cancelled, 130 stopped waiting.",
    )
    select.add_argument(
        "--list-ids",
        type=_ids,
        action="extend",
        metavar="ID,ID",
        help="leads of these lists (vicidial_list.list_id); comma-separated or repeated",
    )
    select.add_argument(
        "--campaign-ids",
        type=_words,
        action="extend",
        metavar="C,C",
        help="leads of the lists of these campaigns (vicidial_lists.campaign_id)",
    )
    select.add_argument(
        "--statuses",
        type=_words,
        action="extend",
        metavar="S,S",
        help="leads with these statuses (NEW, NA, SALE, ...)",
    )
    select.add_argument(
        "--entry-date-before",
        type=_moment,
        metavar="DATE",
        help="leads loaded before this date (2024-01-01: its midnight) or time"
        " (2024-01-01T08:00:00-05:00); without an offset, the service's office-hours zone",
    )
    select.add_argument(
        "--last-call-before",
        type=_moment,
        metavar="DATE",
        help="leads last called before this date or time (never called: loaded before it)",
    )
    _client_options(select)
    _max_wait_option(select)
    _output_options(select, json_help="print the job's final status as JSON only (no bar)")
    select.set_defaults(handler=_select)

    keys = commands.add_parser("keys", help="manage API keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    new = key_commands.add_parser(
        "new",
        help="print a new key once, and its name:sha256[:scope] line",
        description="Without --actions, --lists or --max the key may do everything, as before.",
    )
    new.add_argument("name")
    new.add_argument(
        "--actions",
        metavar="A,B",
        help="only these actions: archive (insert and update), delete, restore, selection",
    )
    new.add_argument(
        "--lists",
        metavar="L,M-N",
        help="only leads of these lists (list IDs and inclusive ranges, e.g. 1001-1004,2001);"
        " a lead of another list is reported forbidden and left untouched",
    )
    new.add_argument(
        "--max",
        metavar="N",
        help="at most N lead IDs per request (at most LEADARCHIVE_MAX_LEAD_IDS)",
    )
    new.set_defaults(handler=_keys_new)

    seed = commands.add_parser(
        "seed-demo",
        help="create an inactive dummy list and load N leads above every lead ID in use",
        description="Lead IDs are above every ID of vicidial_list and vicidial_list_archive;"
        " phone numbers are fictional (555-01xx). Prints the created IDs.",
    )
    seed.add_argument("--count", type=int, help="how many dummy leads (default 500)")
    seed.add_argument("--list-id", type=int, help="a list ID no table uses (default: a free one)")
    seed.add_argument("--ids-file", help="write the created lead IDs here, one per line")
    seed.add_argument(
        "--remove",
        type=int,
        metavar="LIST_ID",
        help="delete a demo list's dummy leads (live and archived) and the list",
    )
    seed.add_argument("--database-url")
    seed.set_defaults(handler=_seed_demo)

    check = commands.add_parser("check", help="verify the archive table and its schema")
    check.add_argument("--database-url")
    check.set_defaults(handler=_check)

    create = commands.add_parser(
        "create-archive-table", help="create vicidial_list_archive by Vicidial's own recipe"
    )
    create.add_argument("--database-url")
    create.set_defaults(handler=_create_archive_table)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; the exit code says whether it worked."""
    args = build_parser().parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
