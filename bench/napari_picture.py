"""The picture of the napari plugin in docs/napari.md and the README: the widget docked beside its
result, rendered headless.

    xvfb-run -a python -m bench.napari_picture        # writes docs/napari.png

stardist's nuclei (the plugin's sample data) segmented by the packaged model with "split touching
objects", as a user would from the widget; ``viewer.screenshot(canvas_only=False)`` renders the
window with the widget (napari's canvas needs OpenGL: an X server such as Xvfb, not
``QT_QPA_PLATFORM=offscreen``).
"""

from __future__ import annotations

import time
from pathlib import Path

import click

OUT = Path(__file__).resolve().parent.parent / "docs" / "napari.png"


@click.command()
@click.option("--out", type=click.Path(path_type=Path), default=OUT, show_default=True)
def main(out: Path) -> None:
    import napari
    from napari._qt.dialogs.qt_notification import NapariQtNotification
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1280, 760)
    viewer.open_sample("unsupseg", "nuclei")
    _, widget = viewer.window.add_plugin_dock_widget("unsupseg", "Segment (unsupseg)")
    widget.split.value = True
    widget.run()
    while widget.worker is not None:
        QApplication.processEvents()
        time.sleep(0.02)
    labels = viewer.layers["nuclei (stardist) labels"]
    labels.contour = 2
    labels.opacity = 0.9
    viewer.reset_view()
    for toast in viewer.window._qt_window.findChildren(NapariQtNotification):
        toast.close()  # napari 0.9's notice that its PyQt5 support is deprecated covers the canvas
    QApplication.processEvents()
    out.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(out), canvas_only=False)
    print(f"wrote {out}: {int(labels.data.max())} nuclei, {widget.status.value}")
    viewer.close()


if __name__ == "__main__":
    main()
