"""The eight services of the platform, one package each; each runs as its own process."""
