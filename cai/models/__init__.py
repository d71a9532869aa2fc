"""Model backends behind one interface; see `base.Backend` and `spec.load_backend`."""
