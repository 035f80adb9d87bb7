"""Registry service: experiments, runs, model versions, stages and content-addressed artifacts."""
