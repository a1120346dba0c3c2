"""``segreport``: merge the per-shard summaries of ``seginfer --shard I/N`` into one report,
and write the HTML report of a merged or finished run (``--html``).

A thin layer over ``unsupseg.infer.merge`` and ``unsupseg.infer.report_html``. Exit codes
follow ``seginfer``: 0 all inputs written, 1 the report has failed inputs, 2 usage error
(no shard files, shards missing, mixed runs, summary.json or report.html already there).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from unsupseg import __version__


@click.command(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="Example: segreport --html masks/   (after seginfer --shard 1/4 ... 4/4 --output masks/)",
)
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--html",
    is_flag=True,
    help="Also write FOLDER/report.html (previews in FOLDER/report_files/). In a folder without shard "
    "files, the page of the finished run in it (its summary.json) is all that is written.",
)
@click.option(
    "--overwrite", is_flag=True, help="Replace an existing summary.json / report.csv / report.html."
)
@click.option("--quiet", "-q", is_flag=True, help="No table; errors only.")
@click.version_option(__version__, prog_name="segreport")
def main(folder, html, overwrite, quiet):
    """Merge FOLDER/summary-shard-I-of-N.json (all N shards) into FOLDER/summary.json.

    The result is what one seginfer run over all inputs writes: the same rows in the
    same order, counts summed, means recomputed over all cases; report.csv too when the
    shards ran with --masks. The shard files are left in place.

    With --html, report.html shows the merged run (or, in a folder with no shard files, the
    finished run): it reads summary.json, the manifests seginfer*.json and the inputs, masks
    and ground truth the rows name (for the previews of the shown inputs only).

    Exit codes: 0 merged and no input failed, 1 merged and some inputs failed (listed
    in summary.json), 2 usage error.
    """
    from unsupseg.infer.merge import MergeError, merge_shards
    from unsupseg.infer.runfiles import SHARD_SUMMARY_GLOB, RunFiles

    files = RunFiles(folder)
    if html and not any(folder.glob(SHARD_SUMMARY_GLOB)):
        _page_only(files, overwrite, quiet)
        return
    summary, csv = files.summary, files.report
    try:  # the rows go to a hidden temporary file in FOLDER, removed at the end
        merged = merge_shards(folder, spool=files.spool())
    except MergeError as e:
        raise click.UsageError(str(e)) from None
    with merged.report as report:
        targets = [summary] + ([csv] if merged.with_csv else []) + ([files.html] if html else [])
        existing = [p for p in targets if p.exists()]
        if existing and not overwrite:
            raise click.UsageError(f"{existing[0]} already exists; pass --overwrite to replace it")
        report.write(summary, csv if merged.with_csv else None)
        if not quiet:
            click.echo(f"segreport: merged {merged.n_shards} shards into {summary}", err=True)
            click.echo(report.table())
        n_failed = report.n_failed
    if html:
        manifests = [files.shard_files(i, merged.n_shards).manifest for i in range(1, merged.n_shards + 1)]
        _write_page(files, manifests, quiet)
    if n_failed:
        click.echo(f"segreport: {n_failed} input(s) failed; see {summary}", err=True)
        sys.exit(1)


def _page_only(files, overwrite: bool, quiet: bool) -> None:
    """--html in a folder without shard files: the page of the run whose summary.json is there."""
    if not files.summary.is_file():
        raise click.UsageError(
            f"{files.folder}: no summary.json and no summary-shard-I-of-N.json; run seginfer "
            f"--output {files.folder} first (or every shard of it)"
        )
    if files.html.exists() and not overwrite:
        raise click.UsageError(f"{files.html} already exists; pass --overwrite to replace it")
    page = _write_page(files, [files.manifest], quiet)
    if page.n_failed:
        click.echo(f"segreport: {page.n_failed} input(s) failed; see {files.summary}", err=True)
        sys.exit(1)


def _write_page(files, manifests: list[Path], quiet: bool):
    from unsupseg.infer.report_html import build_report

    try:
        page = build_report(files.summary, manifests, files.html)
    except (OSError, ValueError) as e:
        raise click.UsageError(f"{files.summary}: cannot make the report ({e}); re-run seginfer") from None
    if not quiet:
        click.echo(
            f"segreport: wrote {page.path} ({page.n_shown} inputs shown, {page.seconds:.1f} s)", err=True
        )
    return page


if __name__ == "__main__":
    main()
