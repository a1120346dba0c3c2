"""``segreport``: merge the per-shard summaries of ``seginfer --shard I/N`` into one report.

A thin layer over ``unsupseg.infer.merge``. Exit codes follow ``seginfer``:
0 all inputs written, 1 the merged report has failed inputs, 2 usage error
(no shard files, shards missing or stopped, mixed runs, summary.json already there,
another run of summary.json into the folder is on), 3 the report could not be
written (the folder is full, read-only, removed, permission denied).
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
    in summary.json), 2 usage error, 3 the report could not be written (full, read-only
    or removed folder, permission denied; nothing partial is left).
    """
    from unsupseg.core.errors import OutputError
    from unsupseg.infer.runfiles import RunFiles
    from unsupseg.infer.runlock import RunLock, RunLockedError

    files = RunFiles(folder)  # summary.json, report.csv: the run files of an unsharded seginfer
    try:
        with RunLock(files):
            _merge(files, overwrite, quiet)
    except RunLockedError as e:
        raise click.UsageError(str(e)) from None
    except (OutputError, OSError) as e:
        from unsupseg.infer.faults import why

        click.echo(
            f"segreport: stopped: cannot write the merged report into {folder}: {why(e, folder)}", err=True
        )
        sys.exit(3)


def _merge(files, overwrite: bool, quiet: bool) -> None:
    from unsupseg.infer.merge import MergeError, merge_shards

    summary, csv = files.summary, files.report
    try:  # the rows go to a hidden temporary file in FOLDER, removed at the end
        merged = merge_shards(files.folder, spool=files.spool())
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
