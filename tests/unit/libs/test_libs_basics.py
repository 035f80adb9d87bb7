"""Shared library: settings from the environment, the record envelope, topic names, error bodies."""

from __future__ import annotations

import pytest
from google.protobuf import struct_pb2

from mlops.bus import topics
from mlops.bus.envelope import EVENT_ID, Envelope, build_headers, decode_headers
from mlops.errors import InvalidArgument, NotFound, PoisonRecord
from mlops.settings import PlatformSettings, peer_address, service_settings
from mlops.v1 import events_pb2


def test_service_ports_come_from_env_or_contract_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("MLOPS_REGISTRY_HTTP_PORT", "MLOPS_REGISTRY_GRPC_PORT", "MLOPS_HOST"):
        monkeypatch.delenv(var, raising=False)
    assert (service_settings("registry").http_port, service_settings("registry").grpc_port) == (8104, 9104)
    monkeypatch.setenv("MLOPS_BANDIT_ROUTER_GRPC_PORT", "7001")
    assert service_settings("bandit-router").grpc_port == 7001
    assert peer_address("bandit-router") == "127.0.0.1:7001"
    monkeypatch.setenv("MLOPS_HOST", "0.0.0.0")
    assert peer_address("bandit-router") == "127.0.0.1:7001"


def test_platform_settings_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPS_KAFKA_BOOTSTRAP", "kafka:9092")
    monkeypatch.setenv("MLOPS_TOPIC_PREFIX", "staging.")
    s = PlatformSettings()
    assert s.kafka_bootstrap == "kafka:9092"
    assert topics.name(topics.PREDICTIONS, s) == "staging.predictions"
    assert topics.logical("staging.predictions", s) == "predictions"
    assert s.registry_url.startswith("sqlite:///")


def test_envelope_round_trip_and_headers() -> None:
    msg = events_pb2.ValidatedEvent(stream="s", event_id="abc", entity_id="e", fields=struct_pb2.Struct())
    headers = decode_headers(build_headers("abc", [("traceparent", b"00-" + b"1" * 32 + b"-" + b"2" * 16 + b"-01")]))
    assert headers[EVENT_ID] == "abc" and headers["traceparent"].startswith("00-")
    env = Envelope(topic="events.validated", value=msg.SerializeToString(), headers=headers, partition=1, offset=9)
    assert env.decode(events_pb2.ValidatedEvent).entity_id == "e"
    assert env.event_id == "abc"


def test_envelope_without_event_id_gets_a_stable_one_from_its_position() -> None:
    env = Envelope(topic="events.raw", value=b"x", partition=3, offset=42)
    assert env.event_id == "events.raw:3:42"


def test_undecodable_payload_is_poison() -> None:
    env = Envelope(topic="t", value=b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff")
    with pytest.raises(PoisonRecord):
        env.decode(events_pb2.ValidatedEvent)


def test_error_bodies() -> None:
    assert InvalidArgument("bad", field="x").to_body() == {
        "error": {"code": "invalid_argument", "message": "bad", "field": "x"}
    }
    assert NotFound("nope").http_status == 404
