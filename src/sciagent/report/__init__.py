"""Reports: markdown and self-contained HTML with plots, and results.json, from a study's records."""
