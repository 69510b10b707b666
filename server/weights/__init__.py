"""The weights on disk: where a model is found or downloaded to, its manifest, the check before start."""
