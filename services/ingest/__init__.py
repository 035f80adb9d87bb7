"""ingest: events in over REST, gRPC and Kafka; per-stream schema validation; dead letters with a reason."""
