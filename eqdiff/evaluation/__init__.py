"""After generation: the metrics (``evaluate``), the report (Table 1, the trade-off plot, the gallery)
and the metric registry they read.
"""
