"""Run the sandbox: ``python -m sandbox --port 8100 --secret S``."""

from __future__ import annotations

import argparse
import logging
import os

from aiohttp import web

from sandbox.provider import MAX_FEE_BP
from sandbox.routes import make_app
from storage.provider import FEE_BP

log = logging.getLogger("sandbox")


def default_public_url(host: str, port: int) -> str:
    # A wildcard bind address is not something a browser or the platform can
    # dial, so point pay_url at loopback instead.
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox", description="In-memory stand-in payment provider."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument(
        "--secret",
        default=os.environ.get("O2O_PAYMENT_SECRET"),
        help="webhook signing secret (default: $O2O_PAYMENT_SECRET)",
    )
    parser.add_argument(
        "--public-url", default=None, help="base of pay_url (default: derived from host/port)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for drop decisions")
    parser.add_argument(
        "--fee-bp",
        type=int,
        default=FEE_BP,
        help=f"fee on each payment in basis points (default: {FEE_BP}, the platform's)",
    )
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    if not args.secret:
        parser.error("a signing secret is required: --secret or O2O_PAYMENT_SECRET")
    if not 0 <= args.fee_bp <= MAX_FEE_BP:
        parser.error(f"--fee-bp must be in [0, {MAX_FEE_BP}]")
    if args.public_url is None:
        args.public_url = default_public_url(args.host, args.port)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    app = make_app(args.secret, args.public_url, seed=args.seed, fee_bp=args.fee_bp)
    log.info("sandbox listening on %s:%d, public url %s", args.host, args.port, args.public_url)
    # run_app turns SIGINT/SIGTERM into a graceful shutdown that runs the app's
    # cleanup (cancelling webhook retries) and then returns normally.
    web.run_app(app, host=args.host, port=args.port, shutdown_timeout=5, print=None)


if __name__ == "__main__":
    main()
