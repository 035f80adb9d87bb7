"""``mlops tokens ...`` and ``mlops audit``: access control and the audit trail from the command line."""

from __future__ import annotations

import asyncio
import getpass
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table

from mlops.auth import audit
from mlops.auth.local import tokens_file
from mlops.auth.tokens import ROLES, TokenStore
from mlops.bus.producer import Producer
from mlops.cli.common import call, console
from mlops.errors import MlopsError
from mlops.settings import PlatformSettings
from mlops.stack import locate

tokens_app = typer.Typer(help="Bearer tokens: create, list, revoke.", no_args_is_help=True)


def _store() -> TokenStore:
    return TokenStore(tokens_file(PlatformSettings()))


def audit_settings(settings: PlatformSettings) -> PlatformSettings:
    """The settings to publish audit records with: the running stack's broker, as its state file
    (``$MLOPS_HOME/run/stack.json``) records it, unless this shell names one (``MLOPS_KAFKA_BOOTSTRAP``).
    A stack started on moved ports (``MLOPS_EMBEDDED_KAFKA_PORT``) is not on the default broker, and a
    record published there would be lost to the stack's audit trail."""
    return settings.model_copy(update={"kafka_bootstrap": locate.kafka_bootstrap(settings)})


def _audit(action: str, target: str, reason: str = "") -> None:
    """Token changes are state changes: publish them to audit.log, or append locally when the stack is down."""
    settings = audit_settings(PlatformSettings())
    actor = f"cli:{getpass.getuser()}"

    async def send() -> None:
        producer = Producer(settings, client_id="mlops-cli")
        await asyncio.wait_for(producer.start(), 5)
        try:
            await audit.record(producer, actor, action, target, reason)
        finally:
            await producer.stop()

    try:
        asyncio.run(send())
    except Exception:
        audit.AuditStore(settings.home / "audit").append({
            "event_id": f"cli:{datetime.now(UTC).timestamp()}", "actor": actor, "action": action,
            "target": target, "reason": reason, "trace_id": "", "time": datetime.now(UTC).isoformat()})


@tokens_app.command("create")
def create(
    name: str,
    role: Annotated[str, typer.Option(help=f"One of: {', '.join(ROLES)}.")] = "viewer",
) -> None:
    """Create a token; it is printed once and stored only as a hash."""
    try:
        record, token = _store().create(name, role)
    except MlopsError as exc:
        console.print(f"[red]{exc.message}[/red]")
        raise typer.Exit(1) from exc
    _audit("tokens.create", f"token:{record.id}", f"{name} as {role}")
    console.print(f"token [bold]{record.id}[/bold] for {name} ({role}); keep it, it is not shown again:")
    print(token)


@tokens_app.command("list")
def list_tokens() -> None:
    """Every token: id, name, role, created, revoked."""
    table = Table("id", "name", "role", "created", "revoked")
    for r in _store().list():
        table.add_row(r.id, r.name, r.role, r.created_at, r.revoked_at or "")
    console.print(table)


@tokens_app.command("revoke")
def revoke(token_id: str) -> None:
    """Revoke a token; every service refuses it from the next request on."""
    try:
        record = _store().revoke(token_id)
    except MlopsError as exc:
        console.print(f"[red]{exc.message}[/red]")
        raise typer.Exit(1) from exc
    _audit("tokens.revoke", f"token:{record.id}", record.name)
    console.print(f"revoked {record.id} ({record.name})")


def audit_cmd(
    actor: Annotated[str | None, typer.Option(help="Only this actor.")] = None,
    action: Annotated[str | None, typer.Option(help="Actions containing this text.")] = None,
    target: Annotated[str | None, typer.Option(help="Targets containing this text.")] = None,
    since: Annotated[str | None, typer.Option(help="ISO time.")] = None,
    limit: Annotated[int, typer.Option(help="Most entries.")] = 50,
) -> None:
    """The audit trail, newest first."""
    params = "&".join(f"{k}={v}" for k, v in
                      {"actor": actor, "action": action, "target": target, "since": since, "limit": limit}.items()
                      if v is not None)
    entries = call("GET", "registry", f"/v1/audit?{params}")["entries"]
    table = Table("time", "actor", "action", "target", "reason")
    for e in entries:
        table.add_row(e["time"], e["actor"], e["action"], e["target"], e.get("reason", ""))
    console.print(table)
