"""Data stages: records in, records out, each record carrying its provenance."""
