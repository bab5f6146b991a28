"""Data: the sample schema, synthetic and real videos in, WebDataset shards, streaming DataModules."""
