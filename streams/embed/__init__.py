"""The embed worker: update jobs in, interest vectors out (fold, store access), with the HTTP API
of the process that owns the store and its metrics."""
