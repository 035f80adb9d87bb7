"""Feedback service: takes business outcomes for predictions and joins them to the predictions they are about."""
