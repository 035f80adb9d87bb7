"""gRPC adapter of the feature service (``mlops.v1.FeatureService``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf import struct_pb2, timestamp_pb2

from mlops.v1 import feature_pb2, feature_pb2_grpc
from services.feature.core import FeatureCore

CHUNK = 1024 * 1024


def _ts(dt: datetime | str | None) -> timestamp_pb2.Timestamp | None:
    if dt is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(datetime.fromisoformat(dt) if isinstance(dt, str) else dt)
    return ts


def card_to_proto(card: dict[str, Any]) -> feature_pb2.DatasetVersion:
    return feature_pb2.DatasetVersion(
        id=card["id"], stream=card["stream"], features=card["features"], label=card["label"], rows=card["rows"],
        sha256=card["sha256"], created_at=_ts(card["created_at"]), definitions_hash=card["definitions_hash"],
    )


class FeatureServicer(feature_pb2_grpc.FeatureServiceServicer):
    def __init__(self, core: FeatureCore) -> None:
        self._core = core

    async def GetOnlineFeatures(self, request: feature_pb2.OnlineFeaturesRequest,
                                context: grpc.aio.ServicerContext) -> feature_pb2.OnlineFeaturesResponse:
        rows = await self._core.read_online(list(request.entities), list(request.features))
        out = feature_pb2.OnlineFeaturesResponse()
        for row in rows:
            values = struct_pb2.Struct()
            values.update(row["values"])
            out.rows.append(feature_pb2.EntityFeatures(
                entity_id=row["entity_id"], values=values, event_time=_ts(row["event_time"]), found=row["found"]))
        return out

    async def BuildDataset(self, request: feature_pb2.BuildDatasetRequest,
                           context: grpc.aio.ServicerContext) -> feature_pb2.DatasetVersion:
        start = request.start.ToDatetime(tzinfo=UTC) if request.HasField("start") else None
        end = request.end.ToDatetime(tzinfo=UTC) if request.HasField("end") else None
        card = await asyncio.to_thread(self._core.datasets.build, request.stream, list(request.features),
                                       request.label, start, end)
        return card_to_proto(card)

    async def GetDataset(self, request: feature_pb2.GetDatasetRequest,
                         context: grpc.aio.ServicerContext) -> feature_pb2.DatasetVersion:
        return card_to_proto(self._core.datasets.card(request.id))

    async def ReadDataset(self, request: feature_pb2.GetDatasetRequest,
                          context: grpc.aio.ServicerContext) -> AsyncIterator[feature_pb2.DatasetChunk]:
        data = await asyncio.to_thread(self._core.datasets.read, request.id)
        for i in range(0, len(data), CHUNK):
            yield feature_pb2.DatasetChunk(data=data[i : i + CHUNK])
