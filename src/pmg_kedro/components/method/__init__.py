"""The method of the paper (§3): keywords, soft preference embeddings, weighted generation and selection as one object (`pmg.PMG`). Imports `models`, `data`, `reporting`."""
