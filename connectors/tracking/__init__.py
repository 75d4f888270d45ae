"""Segment-compatible HTTP tracking collector."""
