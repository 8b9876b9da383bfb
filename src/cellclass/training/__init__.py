"""Training (layer 3): recipes (`recipes`), augmentation (`augment`), one run (`train`),
cache-sized chunks (`chunks`), where runs are computed (`executors`), many runs from scratch
(`experiment`) and classical baselines inside an experiment (`baseline_runs`).
"""
