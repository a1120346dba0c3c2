"""``segreport``: merge the per-shard summaries of ``seginfer --shard I/N`` into one report.

A thin layer over ``unsupseg.infer.merge``. Exit codes follow ``seginfer``:
0 all inputs written, 1 the merged report has failed inputs, 2 usage error
(no shard files, shards missing, mixed runs, summary.json already there).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from unsupseg import __version__


@click.command(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="Example: segreport masks/   (after seginfer --shard 1/4 ... 4/4 --output masks/)",
)
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--overwrite", is_flag=True, help="Replace an existing summary.json / report.csv.")
@click.option("--quiet", "-q", is_flag=True, help="No table; errors only.")
@click.version_option(__version__, prog_name="segreport")
def main(folder, overwrite, quiet):
    """Merge FOLDER/summary-shard-I-of-N.json (all N shards) into FOLDER/summary.json.

    The result is what one seginfer run over all inputs writes: the same rows in the
    same order, counts summed, means recomputed over all cases; report.csv too when the
    shards ran with --masks, objects.csv when they ran with --labels. The shard files
    are left in place.

    Exit codes: 0 merged and no input failed, 1 merged and some inputs failed (listed
    in summary.json), 2 usage error.
    """
    from unsupseg.infer.merge import MergeError, merge_shards
    from unsupseg.infer.runfiles import RunFiles

    files = RunFiles(folder)
    summary, csv = files.summary, files.report
    try:  # the rows go to a hidden temporary file in FOLDER, removed at the end
        merged = merge_shards(folder, spool=files.spool())
    except MergeError as e:
        raise click.UsageError(str(e)) from None
    with merged.report as report:
        tables = {name: files.table(name) for name in merged.tables}
        targets = [summary] + ([csv] if merged.with_csv else []) + list(tables.values())
        existing = [p for p in targets if p.exists()]
        if existing and not overwrite:
            raise click.UsageError(f"{existing[0]} already exists; pass --overwrite to replace it")
        report.write(summary, csv if merged.with_csv else None, tables)
        if not quiet:
            click.echo(f"segreport: merged {merged.n_shards} shards into {summary}", err=True)
            click.echo(report.table())
        if report.failed:
            click.echo(f"segreport: {report.n_failed} input(s) failed; see {summary}", err=True)
            sys.exit(1)


if __name__ == "__main__":
    main()
