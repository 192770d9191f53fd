"""The domain: events, job state, the fold, the wire codec and the errors. Pure: no I/O."""
