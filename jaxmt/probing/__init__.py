"""Probing frozen encoders: SentEval-style tasks from plain text, linear probes per layer, reports."""
