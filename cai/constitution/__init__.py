"""Constitutions and principle libraries: safe YAML, schema, include/merge, diff, validate."""
