"""The CPU decoding engine behind `LocalBackend`: decode step, attention, packed weights, prefix cache."""
