"""What the napari plugin adds to the viewer's start-up (issue 24: under 1 s more than napari alone).

    xvfb-run -a python -m bench.napari_startup [--repeats 5]    # an X display is needed

Each measurement is a fresh Python process that imports napari and opens a viewer (``show=True``,
its Qt window and OpenGL canvas), timed from before ``import napari`` to the viewer's first
processed events. Three cases, interleaved repeat by repeat so that the machine's load falls on
all alike, and compared as medians:

- napari alone: the unsupseg plugin disabled in npe2's plugin manager before the viewer opens;
- with the plugin: installed and enabled (what a user who installed ``unsupseg[napari]`` gets);
- with the plugin's widget docked: also ``add_plugin_dock_widget("unsupseg", ...)``, which
  imports the widget's modules and builds it (seginfer's inference stack waits for the first
  segmentation).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys

import click

CASES = {
    "napari alone": "from npe2 import PluginManager; PluginManager.instance().disable('unsupseg')",
    "with the plugin": "",
    "with the plugin's widget docked": "WIDGET = True",
}
SCRIPT = """
import time
t0 = time.perf_counter()
WIDGET = False
{setup}
import napari
from qtpy.QtWidgets import QApplication
viewer = napari.Viewer(show=True)
if WIDGET:
    viewer.window.add_plugin_dock_widget("unsupseg", "Segment (unsupseg)")
QApplication.processEvents()
print(time.perf_counter() - t0)
viewer.close()
"""


def measure(setup: str) -> float:
    r = subprocess.run([sys.executable, "-c", SCRIPT.format(setup=setup)], capture_output=True, text=True)
    if r.returncode != 0:
        raise click.ClickException(r.stderr[-2000:])
    return float(r.stdout.strip().splitlines()[-1])


@click.command()
@click.option("--repeats", default=5, show_default=True)
def main(repeats: int) -> None:
    times: dict[str, list[float]] = {name: [] for name in CASES}
    for _ in range(repeats):
        for name, setup in CASES.items():
            times[name].append(measure(setup))
    base = statistics.median(times["napari alone"])
    print("| case | median start-up (s) | more than napari alone (s) | runs (s) |")
    print("|---|---|---|---|")
    for name, runs in times.items():
        m = statistics.median(runs)
        print(f"| {name} | {m:.2f} | {m - base:+.2f} | {', '.join(f'{t:.2f}' for t in runs)} |")
    print(json.dumps({k: statistics.median(v) for k, v in times.items()}))


if __name__ == "__main__":
    main()
