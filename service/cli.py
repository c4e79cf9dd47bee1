"""The ``featurestore`` command.

featurestore serve --repo feature_repo [--host 127.0.0.1] [--port 6566] [--workers N] [--insecure]
featurestore serve-offline --repo feature_repo [--host 127.0.0.1] [--port 8815] [--auth]
featurestore demo  --repo feature_repo [--rows 20000]
featurestore env   --repo feature_repo      # eval "$(featurestore env --repo feature_repo)"
featurestore compact --repo feature_repo [--feature-view NAME ...]
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from pydantic import ValidationError

from foundation import environment
from service import local_backends


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _serve(args: argparse.Namespace) -> int:
    # Settings travel to the uvicorn workers through the environment: each worker
    # process builds its own app (and its own Redis pool) from them.
    os.environ.update(
        {
            "FEATURESTORE_REPO_PATH": str(Path(args.repo).resolve()),
            "FEATURESTORE_HOST": args.host,
            "FEATURESTORE_PORT": str(args.port),
            "FEATURESTORE_WORKERS": str(args.workers),
            "FEATURESTORE_INSECURE": "true" if args.insecure else "false",
            **({"FEATURESTORE_AUTH": "true"} if args.auth else {}),
        }
    )
    from service.settings import Settings

    try:
        settings = Settings()
    except ValidationError as exc:
        messages = "; ".join(str(err["msg"]).removeprefix("Value error, ") for err in exc.errors())
        print(f"featurestore serve: refusing to start: {messages}", file=sys.stderr)
        return 2

    import uvicorn

    # uvicorn shuts down gracefully on SIGTERM and then re-raises the signal; turning
    # it into SystemExit lets `backends()` stop the embedded Redis it may have started.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    with local_backends.backends(settings.repo_path):
        uvicorn.run(
            # create_app() behind the lookup shortcut (see service.fastpath)
            "service.app:create_server_app",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            # uvicorn's httptools protocol behind per-connection limits
            # (service.connections); uvloop from uvicorn[standard], named rather than
            # "auto" so a missing one fails instead of falling back to asyncio silently
            http="service.connections:GuardedHttpProtocol",
            loop="uvloop",
            lifespan="on",
            access_log=False,
            timeout_keep_alive=settings.keepalive_timeout_seconds,
            log_level="info",
        )
    return 0


def _serve_offline(args: argparse.Namespace) -> int:
    repo = Path(args.repo).resolve()
    os.environ.update(
        {
            "FEATURESTORE_REPO_PATH": str(repo),
            "FEATURESTORE_HOST": args.host,
            "FEATURESTORE_INSECURE": "true" if args.insecure else "false",
            **({"FEATURESTORE_AUTH": "true"} if args.auth else {}),
        }
    )
    os.environ.setdefault(environment.REGISTRY_ENV, environment.default_registry_url(repo))
    from foundation.errors import FeatureStoreError
    from service.flight import build_server
    from service.settings import Settings

    try:
        settings = Settings()
        server = build_server(settings, port=args.port)
    except ValidationError as exc:
        messages = "; ".join(str(err["msg"]).removeprefix("Value error, ") for err in exc.errors())
        print(f"featurestore serve-offline: refusing to start: {messages}", file=sys.stderr)
        return 2
    except FeatureStoreError as exc:
        print(f"featurestore serve-offline: {exc.message}", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, _exit_cleanly)
    print(f"featurestore serve-offline: Arrow Flight on {args.host}:{server.port}", flush=True)
    try:
        server.serve()
    finally:
        server.shutdown()
    return 0


def _demo(args: argparse.Namespace) -> int:
    from service.demo import run_demo

    return run_demo(Path(args.repo), rows=args.rows)


def _keys(args: argparse.Namespace) -> int:
    import sqlalchemy as sa

    from foundation.errors import FeatureStoreError
    from service.auth import KeyStore, Scope, upgrade

    url = environment.sqlalchemy_url(environment.registry_url(Path(args.repo)))
    if url == environment.default_registry_url(Path(args.repo)):
        environment.data_dir(Path(args.repo)).mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url)
    try:
        upgrade(engine)
        store = KeyStore(engine, project=args.project or environment.repo_project(Path(args.repo)))
        if args.keys_command == "create":
            key = store.create(Scope.parse(args.scope), name=args.name)
            print(key)
            print("store this key now: it is not shown again", file=sys.stderr)
        elif args.keys_command == "revoke":
            store.revoke(args.key_id)
            print(f"revoked {args.key_id}", file=sys.stderr)
        else:
            for info in store.list():
                state = "revoked" if info.revoked else "active"
                created = info.created_at.isoformat(timespec="seconds")
                print(f"{info.key_id}\t{info.scope.name.lower()}\t{state}\t{created}\t{info.name}")
    except FeatureStoreError as exc:
        print(f"featurestore keys: {exc.message}", file=sys.stderr)
        return 1
    except sa.exc.OperationalError as exc:
        where = engine.url.render_as_string(hide_password=True)
        print(
            f"featurestore keys: cannot use the registry database {where}: {exc.orig}",
            file=sys.stderr,
        )
        return 1
    finally:
        engine.dispose()
    return 0


def _compact(args: argparse.Namespace) -> int:

    from foundation.errors import FeatureStoreError
    from offline_store.compact import compact_feature_views

    try:
        store = environment.open_repo(args.repo)
        results = compact_feature_views(store, args.feature_view or None)
    except FeatureStoreError as exc:
        print(f"featurestore compact: {exc.message}", file=sys.stderr)
        return 1
    for result in results:
        print(f"{result.source}\tparts merged: {result.parts_merged}\trows: {result.rows}")
    return 0


def _env(args: argparse.Namespace) -> int:
    print("\n".join(environment.export_lines(Path(args.repo))))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(
        prog="featurestore", description="Feast-native feature store service."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP feature server")
    serve.add_argument("--repo", default="feature_repo", help="Feast repo with feature_store.yaml")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=6566)
    serve.add_argument(
        "--workers", type=int, default=1, help="worker processes, each with its own pool"
    )
    serve.add_argument(
        "--auth",
        action="store_true",
        help="require API keys (Authorization: Bearer); also FEATURESTORE_AUTH=true",
    )
    serve.add_argument(
        "--insecure",
        action="store_true",
        help="allow binding a non-loopback address without authentication",
    )
    serve.set_defaults(func=_serve)

    offline = sub.add_parser(
        "serve-offline",
        help="serve Feast's remote offline store protocol (Arrow Flight) from our DuckDB join",
    )
    offline.add_argument(
        "--repo", default="feature_repo", help="Feast repo with feature_store.yaml"
    )
    offline.add_argument("--host", default="127.0.0.1")
    offline.add_argument("--port", type=int, default=8815, help="as `feast serve_offline`")
    offline.add_argument(
        "--auth", action="store_true", help="require API keys of scope read (Bearer)"
    )
    offline.add_argument(
        "--insecure",
        action="store_true",
        help="allow binding a non-loopback address without authentication",
    )
    offline.set_defaults(func=_serve_offline)

    demo = sub.add_parser(
        "demo", help="generate data, apply, materialize, serve one lookup and a training set"
    )
    demo.add_argument("--repo", default="feature_repo")
    demo.add_argument("--rows", type=int, default=20_000, help="driver-stats rows to generate")
    demo.set_defaults(func=_demo)

    keys = sub.add_parser("keys", help="manage API keys (stored hashed next to the registry)")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="create a key and print it once")
    create.add_argument("--scope", choices=["read", "write", "admin"], required=True)
    create.add_argument("--name", default="", help="a note saying who or what uses the key")
    revoke = keys_sub.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("key_id", help="the id part of fsk_<id>_<secret>")
    listing = keys_sub.add_parser("list", help="list keys (never their secrets)")
    for parser_ in (create, revoke, listing):
        parser_.add_argument("--repo", default="feature_repo")
        parser_.add_argument(
            "--project",
            default=None,
            help="the Feast project the keys belong to (default: the repo's project)",
        )
    keys.set_defaults(func=_keys)

    compact = sub.add_parser(
        "compact",
        help="fold pushed offline parts back into their Parquet sources (safe during pushes)",
    )
    compact.add_argument("--repo", default="feature_repo")
    compact.add_argument(
        "--feature-view",
        action="append",
        help="a view whose source to compact (repeatable); default every local Parquet source",
    )
    compact.set_defaults(func=_compact)

    env = sub.add_parser(
        "env", help="print shell exports so plain `feast` commands use the defaults"
    )
    env.add_argument("--repo", default="feature_repo")
    env.set_defaults(func=_env)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
