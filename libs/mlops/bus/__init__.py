"""The Kafka bus: topic names, the record envelope, producer and consumer helpers, dead letters,
idempotency by ``event_id``, and the faust app factory."""
