"""The reporting layer every report of the project goes through (issue 18).

- `stats`: one bootstrap interval of a mean and one paired test (paper §4.4's intervals and
  paired differences, and the same statistics for Tables 2–3 and the keyword quality report).
- `tables`: Markdown tables from DataFrames (`DataFrame.to_markdown`), number formats, footnotes.
- `figures`: matplotlib `Figure` objects made without pyplot (no backend to select).
- `environment`: the run's machine, the torch thread count for a block, JSON-safe values.
"""
