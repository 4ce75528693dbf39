"""Local backends for `certsync process` and friends: a vault directory, an outbox directory, SQLite."""
