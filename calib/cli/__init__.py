"""The `detcal` command line: fit, patch, eval, inspect, doctor.

One module per command, each with `add_parser(subparsers)` and `run(args) -> int`; the shared
argument groups and types are in `calib.cli.args`. A command module imports only argparse at
module level and the library inside `run`, so `detcal --help` stays fast.

User errors (DetcalError) print one line, `detcal: error: ...`, and exit with code 2; Ctrl-C
prints `detcal: interrupted` and exits 130. Anything else is a bug in detcal and keeps its
traceback.
"""
from __future__ import annotations

import argparse
import sys

from calib.errors import DetcalError

from . import doctor, fit, inspect, patch
from . import eval as eval_command

DESCRIPTION = """\
Post-hoc calibration and false-positive filtering for exported ONNX object detectors.

  detcal fit    --model M.onnx --data data.yaml --out calibration.json
  detcal patch  --model M.onnx --calibration calibration.json        -> M.detcal.onnx
  detcal eval   --model M.onnx --patched M.detcal.onnx --data data.yaml --split test
  detcal inspect M.onnx                                              (EP op coverage)
  detcal doctor --model M.onnx --data data.yaml                      (debug checklist)
"""

COMMANDS = (fit, patch, eval_command, inspect, doctor)


class _Version(argparse.Action):
    """--version: detcal's version and the calibration.json format it writes (imported only when asked)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from calib.artifact.schema import FORMAT, FORMAT_VERSION
        from calib.artifact.version import DETCAL_VERSION

        print(f"detcal {DETCAL_VERSION} (writes {FORMAT} version {FORMAT_VERSION})")     # stdout, as argparse's own
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="detcal", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action=_Version, help="print detcal's version and the artifact format it writes")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not args.command:
            parser.print_help()
            return 2
        try:
            return args.run(args)
        except DetcalError as exc:
            print(f"detcal: error: {exc}", file=sys.stderr)
            return 2
    except KeyboardInterrupt:
        print("detcal: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
