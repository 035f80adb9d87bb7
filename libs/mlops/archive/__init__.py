"""The prediction archive: every record of ``predictions`` kept as Parquet by time, with the outcomes from
``rewards`` and ``labels`` beside it; queryable by prediction_id, model version and time range."""
