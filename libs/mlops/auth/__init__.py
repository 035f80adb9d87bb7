"""Authentication and authorisation: bearer tokens (hashed at rest), roles, the permission each API method
needs, and the request's principal for the audit trail. Off unless ``MLOPS_AUTH_TOKENS_FILE`` is set."""
