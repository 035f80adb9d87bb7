"""Feedback service: joins business outcomes to predictions, emitting rewards and labels exactly once."""

from mlops.archive import mount as archive
from mlops.bus import topics
from mlops.bus.batch_consumer import BatchConsumer
from mlops.service import Service, run_main
from mlops.settings import PlatformSettings, service_settings
from mlops.v1 import feedback_pb2_grpc
from services.feedback import consumers, grpc_api, http
from services.feedback.core import FeedbackCore
from services.feedback.settings import FeedbackSettings
from services.feedback.store import JoinStore


async def main() -> None:
    settings = PlatformSettings()
    feedback = FeedbackSettings()
    service = Service(settings, service_settings("feedback"))
    assert service.producer is not None
    store = JoinStore(
        service.redis,
        prediction_ttl_s=feedback.prediction_ttl_s,
        feedback_ttl_s=feedback.feedback_ttl_s,
        dedup_ttl_s=settings.dedup_ttl_s,
        claim_lease_s=feedback.claim_lease_s,
    )
    core = FeedbackCore(store, service.producer, feedback)
    service.add_http(http.router(core))
    servicer = grpc_api.Servicer(core)
    service.add_grpc(lambda server: feedback_pb2_grpc.add_FeedbackServiceServicer_to_server(servicer, server))
    # Batch consumers (a lane per partition): one Redis read, one Redis write and one send per batch. The
    # group names are those of the per-record consumers they replace, so an upgrade resumes at their offsets.
    for topic, handler, prepare in (
        (topics.PREDICTIONS, consumers.on_predictions(core, service.producer), consumers.prepare_predictions),
        (topics.FEEDBACK_RAW, consumers.on_feedback(core, service.producer), consumers.prepare_feedback),
    ):
        consumer = BatchConsumer(settings, topic, f"feedback.{topic}", handler, prepare=prepare,
                                 max_records=feedback.batch_records)
        service.add_task(consumer.run)
        service.on_stop(consumer.stop)
    service.add_task(core.run_sweeper)
    # The prediction archive (GET /v1/predictions): predictions with their outcomes, as Parquet by date.
    archive.mount(service)
    service.on_stop(core.stop)
    await service.run()


def cli() -> None:
    run_main("feedback", main)


if __name__ == "__main__":
    cli()
