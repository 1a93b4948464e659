"""``gnbench report DIR [DIR ...] [--out FILE]``: sweep folders -> Markdown report + PNGs."""

from __future__ import annotations

import argparse
import sys

from gnbench.report.build import write_report


def report_main(argv: list[str]) -> int:
    """Command-line entry of ``gnbench report``.

    Args:
      argv: arguments after ``report``, e.g. ``["runs/compare_tiny"]``.

    Returns:
      Exit code: 0 on success, 2 when a folder is not a sweep folder or a file in it is
      corrupt (one line naming the file).

    Example:
      >>> report_main(["runs/compare_tiny", "--out", "reports/tiny.md"])  # doctest: +SKIP
      0
    """
    parser = argparse.ArgumentParser(prog="gnbench report", description=__doc__)
    parser.add_argument("folders", nargs="+", help="sweep folders (<out>/<sweep name>)")
    parser.add_argument(
        "--out",
        default=None,
        help="Markdown file (default: <folder>/report.md for one folder, "
        "reports/report.md for several); figures go next to it",
    )
    args = parser.parse_args(argv)
    try:
        path = write_report(args.folders, args.out)
    except (OSError, ValueError) as e:  # A folder that is not a sweep's, a corrupt file in it.
        print(f"gnbench report: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(report_main(sys.argv[1:]))
