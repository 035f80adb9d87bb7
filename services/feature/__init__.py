"""feature: streaming features from validated events; online store in Redis; offline store in Parquet;
versioned point-in-time training sets."""
