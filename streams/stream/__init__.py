"""The stream worker: a pure core (per-user state, triggers, popularity, partition order) and its
faust adapter (app, tables, ordering repairs, group offsets)."""
