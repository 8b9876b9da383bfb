"""Figures (layer 4): each figure one function, tidy data in, PNG out (`plots`, `probes`,
`explain`); the shared drawing helpers (`drawing`).
"""
