"""Why the network answers as it does (layer 5): attribution maps (`attribution`), probes
(`probes`: calibration, adversarial flips, brightness confound, loss vs accuracy), the explain
step over a results folder (`step`, `probe_step`) and what both share (`common`).
"""
