"""Bandit router: the product-facing predict endpoint that splits traffic between model variants by a
pluggable policy, calls inference, publishes predictions and learns from rewards."""
