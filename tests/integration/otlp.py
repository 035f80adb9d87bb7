"""An OTLP/gRPC trace receiver inside the test process: every service of the test stack exports its spans
here, so tests can check that one request forms one connected trace across processes."""

from __future__ import annotations

import threading
from concurrent import futures
from dataclasses import dataclass

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


@dataclass(frozen=True)
class Span:
    service: str
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, str]
    links: tuple[str, ...]  # trace ids this span links to


class _Servicer(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, sink: list[Span], lock: threading.Lock) -> None:
        self._sink = sink
        self._lock = lock

    def Export(self, request, context):  # type: ignore[no-untyped-def]
        spans = []
        for rs in request.resource_spans:
            service = next((a.value.string_value for a in rs.resource.attributes if a.key == "service.name"), "")
            for ss in rs.scope_spans:
                for s in ss.spans:
                    spans.append(Span(
                        service=service, name=s.name, kind=s.kind, trace_id=s.trace_id.hex(),
                        span_id=s.span_id.hex(), parent_span_id=s.parent_span_id.hex(),
                        attributes={a.key: str(getattr(a.value, a.value.WhichOneof("value") or "string_value"))
                                    for a in s.attributes},
                        links=tuple(link.trace_id.hex() for link in s.links),
                    ))
        with self._lock:
            self._sink.extend(spans)
        return trace_service_pb2.ExportTraceServiceResponse()


class OtlpReceiver:
    def __init__(self, port: int) -> None:
        self.port = port
        self._spans: list[Span] = []
        self._lock = threading.Lock()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_Servicer(self._spans, self._lock), self._server)
        self._server.add_insecure_port(f"127.0.0.1:{port}")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._server.start()

    def stop(self) -> None:
        self._server.stop(grace=1)

    def spans(self, trace_id: str | None = None) -> list[Span]:
        with self._lock:
            return [s for s in self._spans if trace_id is None or s.trace_id == trace_id]
