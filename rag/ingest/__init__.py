"""Files into the store: a reader per format (stored text and page map), character and
line-wrap repairs, document ids and folder scans, preparation (layout, chunks, term counts) and
the ingest runner (add, replace, remove, sync; one transaction per document)."""
