"""The demo: a loan-approval scenario on river's Agrawal stream, driven through the platform's public APIs."""
