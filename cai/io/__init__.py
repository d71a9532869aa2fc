"""Files in and out: the record store, prompt and pair sources, atomic writes."""
