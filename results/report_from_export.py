"""RESULTS.md v3: re-write a committed sweep's report from its Parquet export, without MLflow,
so that it opens on the primary verdict (`analysis.report.report_from_export`).

The digits sweeps of RESULTS.md v2 ran before a spec could declare its primary contrasts
(`analysis.primary`); their exports carry no declaration, so the report uses the default family
(every arm with a modifier against its base arm), a rule fixed before any of these data, unless
`--primary` names others.

    python results/report_from_export.py results/digits_rigl/data results/digits_rigl_v3 \
        [--primary rigl+sparseopt:rigl ...]
"""

from __future__ import annotations

import argparse

from analysis.report import report_from_export


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", help="an export folder (a report's data/)")
    parser.add_argument("out_dir", help="where the report goes")
    parser.add_argument("--primary", action="append", metavar="ARM:BASELINE")
    args = parser.parse_args()
    result = report_from_export(args.data_dir, args.out_dir, primary=args.primary)
    print(f"report: {result.markdown} ({result.declaration.to_json()})")


if __name__ == "__main__":
    main()
