"""Inference service: the Open Inference Protocol (KServe V2) over REST and gRPC for registry models,
with dynamic batching, following model lifecycle events."""
