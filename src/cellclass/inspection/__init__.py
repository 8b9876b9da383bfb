"""Inspect a class-folder dataset before training (layer 2): statistics, duplicates and leakage
(`dataset`), decoding and hashing each image once (`scan`).
"""
