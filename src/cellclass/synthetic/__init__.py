"""Synthetic fluorescence fields (layer 1): drawing one field (`rendering`), class folders and
the demo data (`folders`).
"""
