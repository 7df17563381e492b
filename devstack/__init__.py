"""``make run``: the embedded stack (Temporal dev server, worker, front door) under one Ctrl-C."""
