"""Models (layer 1): the study's CNN and better ones (`cnn`), the classical feature baseline
(`baselines`).
"""
