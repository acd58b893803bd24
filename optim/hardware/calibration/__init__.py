"""Calibrating this CPU: micro-benchmarks, kernel profiles, fits, background job, validation."""
