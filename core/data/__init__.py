"""Input files: readers that account for every record, Great Expectations suites, SFT formats."""
