"""Human feedback: exports as annotators produce them, into one versioned pair table.

  formats       one record of a known export format -> votes (prompt, chosen, rejected, annotator)
  importer      records -> validated, de-duplicated votes, written in chunks; the batch summary
  dataset       the versioned feedback dataset (immutable batches + the merged pair table)
  pairs         the pair table as the stages that train read it (ties apart)
  stats         per-annotator counts, pairwise agreement, disagreement on one comparison
  batches       an import with the project's settings, recorded in MLflow and DVC
  inbox         the loop's inbox of exports; collect: the next batch to label; label_studio:
                the same through a Label Studio server
Files are read by rlhf.core.data.readers (JSON, JSONL, gzip, CSV, Parquet, streamed).
"""
