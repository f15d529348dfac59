"""The `o2o` command line: run the platform, seed a city, mint dev tokens, check health."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from types import FrameType

import httpx
import typer
from rich.console import Console
from rich.table import Table

from storage.settings import Settings, get_settings

app = typer.Typer(help="Run and operate the o2o delivery platform.", no_args_is_help=True)
console = Console()


@app.command()
def up(
    seed_city: bool = typer.Option(True, "--seed/--no-seed", help="Seed the demo city."),
    front_door: str = typer.Option("", help="haproxy or proxy (default from settings)."),
    dev: bool = typer.Option(
        False, "--dev/--no-dev", help="Dev mode: tokens for anybody, default secrets, loopback."
    ),
) -> None:
    """Start Redis, the sandbox, Ray, the actors and Serve; seed; run until Ctrl-C."""
    from cluster.launcher import Platform
    from cluster.seed import seed

    settings = get_settings()
    if front_door:
        settings = settings.model_copy(update={"front_door": front_door})
    if dev:
        settings = settings.model_copy(update={"dev_mode": True})
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    platform = Platform(settings)
    try:
        with console.status("starting Redis, sandbox, Ray, actors and Serve…"):
            platform.start()
        report = None
        if seed_city and not stop.is_set():
            with console.status("seeding the demo city…"):
                report = seed(platform.url)
        _print_urls(settings, platform.url)
        if report is not None:
            console.print(
                f"seeded {len(report.merchants)} merchants, {len(report.riders)} riders online, "
                f"{len(report.customers)} customers, coupon [bold]{report.coupon}[/]"
            )
            for who, token in report.tokens.items():
                console.print(f"[dim]{who}:[/] {token}", soft_wrap=True)
            if settings.dev_mode:
                dashboard = f"{platform.url}/dashboard?token={report.tokens['admin']}"
                console.print(f"dashboard: {dashboard}", soft_wrap=True)
        console.print("[green]running[/] — Ctrl-C stops everything")
        stop.wait()
    finally:
        with console.status("stopping…"):
            platform.stop()
        console.print("stopped")


def _print_urls(settings: Settings, api_url: str) -> None:
    table = Table(title="o2o is up")
    table.add_column("what")
    table.add_column("where")
    table.add_row("HTTP API", api_url)
    table.add_row("OpenAPI", f"{api_url}/docs")
    table.add_row("operations dashboard", f"{api_url}/dashboard")
    table.add_row("terminals (demo city)", f"{api_url}/terminals")
    table.add_row("payment sandbox", settings.sandbox_url)
    table.add_row("Redis", settings.effective_redis_url)
    table.add_row("front door", settings.front_door)
    console.print(table)


@app.command("seed")
def seed_command(url: str = typer.Option("", help="API base URL.")) -> None:
    """Seed the demo city into a running platform."""
    from cluster.seed import seed

    report = seed(url or get_settings().platform_url)
    console.print(f"seeded {len(report.merchants)} merchants and {len(report.riders)} riders")


@app.command()
def token(role: str, sub: str, url: str = typer.Option("", help="API base URL.")) -> None:
    """Print a dev token for a role and id."""
    answer = httpx.post(
        f"{url or get_settings().platform_url}/v1/auth/dev-token", json={"role": role, "sub": sub}
    )
    if answer.status_code != 200:
        console.print(answer.text)
        raise typer.Exit(1)
    print(answer.json()["token"])


@app.command()
def health(url: str = typer.Option("", help="API base URL.")) -> None:
    """Ask the platform whether it is up."""
    answer = httpx.get(f"{url or get_settings().platform_url}/v1/health", timeout=10)
    console.print(answer.json())
    raise typer.Exit(0 if answer.status_code == 200 else 1)


hosts_app = typer.Typer(help="The entity host actors: how many, where, and what each owns.")
app.add_typer(hosts_app, name="hosts")


def _connect_ray() -> None:
    import ray

    from actors.directory import NAMESPACE

    if not ray.is_initialized():
        ray.init(address=get_settings().ray_address or "auto", namespace=NAMESPACE)


@hosts_app.command("show")
def hosts_show() -> None:
    """Each kind's layout and each host's node and shards (RAY_ADDRESS names the cluster)."""
    import asyncio

    import ray

    from actors.directory import KINDS, NAMESPACE, host_name
    from storage.layout import LayoutStore
    from storage.redis import connect

    _connect_ray()

    async def show() -> None:
        client = connect(get_settings().effective_redis_url, 2)
        try:
            layouts = await LayoutStore(client).read_all(KINDS)
        finally:
            await client.aclose()
        table = Table(title="entity hosts")
        for column in ("host", "node", "epoch", "shards", "cached"):
            table.add_column(column)
        for kind in KINDS:
            layout = layouts[kind]
            for index in range(layout.count):
                try:
                    handle = ray.get_actor(host_name(kind, index), namespace=NAMESPACE)
                    where = await handle.placement.remote()
                except Exception as err:  # the row says what is wrong with that host
                    table.add_row(host_name(kind, index), f"[red]{err!r}[/]", "", "", "")
                    continue
                table.add_row(
                    where["name"],
                    where["node_id"][:12],
                    str(where["epoch"]),
                    str(len(where["shards"])),
                    str(where["entities_cached"]),
                )
        console.print(table)

    asyncio.run(show())


@hosts_app.command("scale")
def hosts_scale(kind: str, count: int) -> None:
    """Run COUNT hosts of KIND (merchant, rider_zone, payment): only the shards the new
    layout reassigns move, each handed over by its old host."""
    import asyncio

    from actors.registry import add_host

    _connect_ray()
    layout = asyncio.run(add_host(kind, count))
    console.print(f"{kind}: {layout.count} hosts, epoch {layout.epoch}")


@hosts_app.command("dedicate")
def hosts_dedicate(kind: str, entity_id: str) -> None:
    """Give ENTITY_ID's shard (a hot merchant's) a host of its own."""
    import asyncio

    from actors.registry import dedicate_host

    _connect_ray()
    layout = asyncio.run(dedicate_host(kind, entity_id))
    console.print(f"{kind}: {layout.count} hosts, pinned {layout.pins}, epoch {layout.epoch}")


@app.command(
    "simulate",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def simulate(ctx: typer.Context) -> None:
    """Simulate a city's customers, merchants and riders (options: `o2o simulate --help`)."""
    # The simulator is a load test: it runs as its own process and drives the platform
    # over HTTP only, so the operator's command line does not import it.
    raise typer.Exit(subprocess.call([sys.executable, "-m", "loadtests.simulator", *ctx.args]))


if __name__ == "__main__":
    app()
