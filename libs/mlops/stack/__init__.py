"""The embedded stack: the broker, redis-server and the eight services as local processes."""
