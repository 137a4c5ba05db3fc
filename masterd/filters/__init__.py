"""Job filter rules (gnt-filter): rules.py (shape, order, matching), store.py (durable storage),
query.py (the `filter` query resource). The scheduler applies them in masterd.engine."""
