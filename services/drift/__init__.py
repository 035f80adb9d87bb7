"""Drift service: streaming drift detection on predictions and labels, per model version."""
