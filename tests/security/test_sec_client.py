"""``Client()`` with no arguments on a stack ``mlops up`` started with auth on (ports moved off the defaults):
an app that knows only ``MLOPS_HOME`` finds the services, the broker and the local admin token as the CLI does,
and is let in; the same app without the token is refused, so the test can tell the two apart."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx

from tests.security.conftest import KAFKA_PORT, SecureStack

APP = """
import json, sys
from mlops import errors
from mlops.client import Client

stream, token = sys.argv[1], (None if sys.argv[2] == "-" else sys.argv[2])
with Client(token=token) as mlops:
    try:
        sent = mlops.send_events(stream, [{"event_id": "e-1", "entity_id": "u-1", "amount": 12.5}])
        print(json.dumps({"accepted": sent.accepted, "kafka": mlops.kafka_bootstrap}))
    except errors.MlopsError as exc:
        print(json.dumps({"refused": type(exc).__name__, "message": exc.message}))
"""


def _app(secure: SecureStack, tmp_path: Path, stream: str, token: str | None) -> dict[str, object]:
    """Run the app as a user would: a fresh process whose only MLOPS_* setting is MLOPS_HOME."""
    script = tmp_path / "app.py"
    script.write_text(APP)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")}
    env["MLOPS_HOME"] = str(secure.home)
    done = subprocess.run([sys.executable, str(script), stream, "-" if token is None else token], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_client_without_arguments_finds_the_stack_and_its_token(secure: SecureStack, tmp_path: Path) -> None:
    stream = f"client{uuid.uuid4().hex[:8]}"
    with secure.http("admin") as http:
        r = http.put(secure.url("ingest", f"/v1/streams/{stream}/schema"),
                     json={"fields": [{"name": "amount", "type": "float"}]})
    assert r.status_code == 200, r.text
    found = _app(secure, tmp_path, stream, None)
    assert found == {"accepted": 1, "kafka": f"127.0.0.1:{KAFKA_PORT}"}, found
    without_token = _app(secure, tmp_path, stream, "")  # token="": send none
    assert without_token["refused"] == "Unauthenticated", without_token
    with httpx.Client(timeout=30) as anonymous:  # and the stack really is on auth: no token, no entry
        assert anonymous.get(secure.url("ingest", f"/v1/streams/{stream}/schema")).status_code == 401
