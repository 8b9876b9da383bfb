"""Images in, pixels out (layer 1): reading and writing one file (`images`, `image_writing`),
raw values -> [0, 1] (`normalization`), what is done to each file before it is stored
(`preprocessing`), class folders (`folders`), the decoded-pixel store (`cache`) and loaded
datasets (`datasets`).
"""
