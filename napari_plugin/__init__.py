"""unsupseg's napari plugin (``pip install "unsupseg[napari]"``), declared in ``napari.yaml`` (npe2).

    widget.py   the dock widget: segment the selected Image layer into a Labels layer, adapt the
                model to the open images, save the adapted model (Qt, magicgui)
    segment.py  its work without Qt: a layer's pages, segmented page by page with seginfer's
                Segmenter (its tiling, foreground rule, structure step and labels), the layer's
                features (objects.csv's measurements), the adaptation (export/adapt.py)
    io.py       the reader of a seginfer output folder and the writer of a Labels layer
    sample.py   stardist's bundled nuclei image as sample data

This package imports nothing: napari imports each module only when its contribution is first used,
so the plugin adds nothing to the viewer's start-up. docs/napari.md describes the plugin.
"""
