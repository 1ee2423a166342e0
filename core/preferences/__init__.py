"""Human-feedback import: exports as annotators produce them, into one pair table.

Files are read by tasks/readers.py (JSON, JSONL, gzip, CSV, Parquet, streamed).
formats: one record of a known export format -> votes (prompt, chosen, rejected, annotator).
importer: records -> validated, de-duplicated votes, written in chunks; the batch summary.
dataset: the versioned feedback dataset (immutable batches + the merged pair table).
stats: per-annotator counts, pairwise agreement and disagreement on the same comparison.
"""
