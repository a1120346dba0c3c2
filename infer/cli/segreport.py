"""``segreport``: merge the per-shard summaries of ``seginfer --shard I/N`` into one report,
and write the HTML report of a merged or finished run (``--html``).

A thin layer over ``unsupseg.infer.merge`` and ``unsupseg.infer.html.page``. Exit codes
follow ``seginfer``: 0 all inputs written, 1 the report has failed inputs, 2 usage error
(no shard files, shards missing or stopped, mixed runs, summary.json or report.html already
there, another run of summary.json into the folder is on), 3 the report could not be
written (the folder is full, read-only, removed, permission denied).
"""

from __future__ import annotations

from pathlib import Path

import click

from unsupseg import __version__
from unsupseg.core.errors import OutputError
from unsupseg.infer.cli.exits import exit_codes, exit_if_failed
from unsupseg.infer.faults import describe_fault
from unsupseg.infer.html.page import build_report
from unsupseg.infer.merge import merge_shards
from unsupseg.infer.runfiles import SHARD_SUMMARY_GLOB, RunFiles
from unsupseg.infer.runlock import RunLock


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
    shards ran with --masks, objects.csv when they ran with --labels. The shard files
    are left in place.

    With --html, report.html shows the merged run (or, in a folder with no shard files, the
    finished run): it reads summary.json, the manifests seginfer*.json and the inputs, masks
    and ground truth the rows name (for the previews of the shown inputs only).

    Exit codes: 0 merged and no input failed, 1 merged and some inputs failed (listed
    in summary.json), 2 usage error, 3 the report could not be written (full, read-only
    or removed folder, permission denied; nothing partial is left).
    """
    files = RunFiles(folder)  # summary.json, report.csv: the run files of an unsharded seginfer

    def stopped(e: BaseException) -> str:
        return f"segreport: stopped: cannot write the report into {folder}: {describe_fault(e, folder)}"

    with exit_codes((OutputError, OSError), stopped), RunLock(files):
        if html and not any(folder.glob(SHARD_SUMMARY_GLOB)):
            n_failed = _page_only(files, overwrite, quiet)
        else:
            n_failed = _merge(files, overwrite, quiet, html)
    exit_if_failed("segreport", n_failed, files.summary)


def _merge(files, overwrite: bool, quiet: bool, html: bool) -> int:
    """Merge the shards (and write the page); the number of failed inputs."""
    summary, csv = files.summary, files.report
    # the rows go to a hidden temporary file in FOLDER, removed at the end
    merged = merge_shards(files.folder, spool=files.spool())
    with merged.report as report:
        tables = {name: files.table(name) for name in merged.tables}
        targets = [summary] + ([csv] if merged.with_csv else []) + list(tables.values())
        existing = [p for p in targets + ([files.html] if html else []) if p.exists()]
        if existing and not overwrite:
            raise click.UsageError(f"{existing[0]} already exists; pass --overwrite to replace it")
        report.write(summary, csv if merged.with_csv else None, tables)
        if not quiet:
            click.echo(f"segreport: merged {merged.n_shards} shards into {summary}", err=True)
            click.echo(report.summary_text())
            warning = (report.quality() or {}).get("warning")
            if warning:  # the merged run's median score is low (infer/quality.py)
                click.echo(f"segreport: warning: {warning}", err=True)
        n_failed = report.n_failed
    if html:
        manifests = [files.shard_files(i, merged.n_shards).manifest for i in range(1, merged.n_shards + 1)]
        _write_page(files, manifests, quiet)
    return n_failed


def _page_only(files, overwrite: bool, quiet: bool) -> int:
    """--html in a folder without shard files: the page of the run whose summary.json is there."""
    if not files.summary.is_file():
        raise click.UsageError(
            f"{files.folder}: no summary.json and no summary-shard-I-of-N.json; run seginfer "
            f"--output {files.folder} first (or every shard of it)"
        )
    if files.html.exists() and not overwrite:
        raise click.UsageError(f"{files.html} already exists; pass --overwrite to replace it")
    return _write_page(files, [files.manifest], quiet).n_failed


def _write_page(files, manifests: list[Path], quiet: bool):
    try:
        page = build_report(files.summary, manifests, files.html)
    except ValueError as e:
        raise click.UsageError(f"{files.summary}: cannot make the report ({e}); re-run seginfer") from None
    if not quiet:
        click.echo(
            f"segreport: wrote {page.path} ({page.n_shown} inputs shown, {page.seconds:.1f} s)", err=True
        )
    return page


if __name__ == "__main__":
    main()
