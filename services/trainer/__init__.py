"""Trainer service: training jobs that build a dataset, fit a small torch classifier and register it."""
