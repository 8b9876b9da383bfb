"""Export one trained run (layer 5): the exported network and single-file formats
(`formats`), the bioimage.io package (`bioimageio`), and `runs.export_run`.
"""
