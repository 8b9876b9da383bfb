"""The HTML reports (layer 6): one results folder (`build`, with its sections in `sections`
and rendering in `html`), several experiments of one study (`study`); templates in
``templates/``.
"""
