"""The ``headstart`` command: thin commands over the Python API.

Each command module (``train``, ``predict``, ``doctor``, ``export``, ``lab``, ``serve``,
``cluster``, ``runs``) adds its sub-command with ``register(sub)`` and imports torch only inside the
command, so ``headstart --help`` is instant. Errors the user can fix are printed without a
traceback (exit status 2).
"""

from __future__ import annotations

import argparse
import sys

from ..errors import HeadstartError
from . import cluster, doctor, explain, export, lab, label, predict, runs, serve, train
from .common import add_data_fractions, write_json
from .parser import HeadstartParser


def cmd_backbones(args) -> int:
    from ..backbones import list_backbones

    for b in list_backbones():
        state = "available" if b.available else f"unavailable: {b.why_not}"
        print(f"{b.name:<28} {b.description}\n{'':<28} {state}")
    return 0


def cmd_scan(args) -> int:
    from ..data.scan import scan

    r = scan(args.data, val_fraction=args.val_fraction, test_fraction=args.test_fraction,
             deep=not args.fast, progress=not args.quiet)
    if args.json:
        payload = {"root": str(r.root), "layout": r.layout, "counts": r.counts(), "notes": r.notes,
                   "bad": [{"file": b.rel, "reason": b.reason, "detail": b.detail} for b in r.bad],
                   "duplicates": [{"files": g.rels, "spans_classes": g.spans_classes, "spans_splits": g.spans_splits}
                                  for g in r.duplicates]}
        write_json(args.json, payload)
    print(r.describe())
    if r.bad:
        print(f"\n{len(r.bad)} bad files (left untouched; train skips them):")
        for b in r.bad:
            print(f"  {b.rel}: {b.reason}: {b.detail}")
    if r.duplicates:
        print(f"\n{len(r.duplicates)} groups of identical files:")
        for g in r.duplicates:
            flags = [w for w, on in (("ACROSS CLASSES", g.spans_classes), ("ACROSS SPLITS (leak)", g.spans_splits)) if on]
            print(f"  {' = '.join(g.rels)}" + (f"   [{', '.join(flags)}]" if flags else ""))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .._version import __version__

    parser = HeadstartParser(prog="headstart", description="A folder of images becomes a working CNN "
                                     "predictor: transfer learning on an embedded ImageNet backbone.")
    parser.add_argument("--version", action="version", version=f"headstart {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("backbones", help="list the backbones and whether each is available")
    p.set_defaults(run=cmd_backbones)

    p = sub.add_parser("scan", help="count images per class and split; list bad files and duplicates")
    p.add_argument("data", help="folder: DATA/<class>/* or DATA/{train,val,test}/<class>/*")
    add_data_fractions(p)
    p.add_argument("--fast", action="store_true", help="check headers only (skips the full decode that finds truncated files)")
    p.add_argument("--json", metavar="FILE", help="also write the findings as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(run=cmd_scan)
    for module in COMMANDS:
        module.register(sub)
    for p in sub.choices.values():  # every command: the image decoders' warnings are counted, shown on request
        if not any("--verbose" in a.option_strings for a in p._actions):
            p.add_argument("--verbose", action="store_true",
                           help="show each warning of the image decoders (by default they are counted)")
    return parser


COMMANDS = [train, predict, label, explain, lab, doctor, export, serve, cluster, runs]  # each adds its own sub-commands


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    if not (sys.argv[1:] if argv is None else argv):
        parser.print_help()  # a bare `headstart` asks what it can do
        return 0
    args = parser.parse_args(argv)
    for stream in (sys.stdout, sys.stderr):  # a file name that is not UTF-8 prints as its own bytes
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="surrogateescape")
    if args.command == "serve":  # a server runs for days: its warnings go where they always went
        return _run(args)
    from ..data.decode_warnings import counted_decoder_warnings

    with counted_decoder_warnings(getattr(args, "verbose", False)) as decoder:
        code = _run(args)
    if decoder.summary():
        print(f"note: {decoder.summary()}", file=sys.stderr)
    return code


def _run(args) -> int:
    try:
        return args.run(args)
    except HeadstartError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `headstart predict ... | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted: finished feature batches are cached; run the same command again to continue.",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
