"""Prepare fields of view (layer 2): tiling (`tiling`) and rotation (`rotation`) into new
trees with a provenance manifest (`steps`), and what a step did (`result`).
"""
