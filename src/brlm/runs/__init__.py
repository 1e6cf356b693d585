"""Run folders: artifacts and manifests, run records, metric logging, reports."""
