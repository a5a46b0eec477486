"""Scoring against a high-resolution reference: masked metrics, degrade -> restore -> score, reports."""
