"""``headstart explain MODEL IMAGE... --out DIR``: heat maps of why the model says what it says."""

from __future__ import annotations

import sys

from ..errors import HeadstartError


def cmd_explain(args) -> int:
    from ..data.scan import find_images
    from ..estimator import load
    from ..estimator.explain import explain

    files = find_images(args.images, as_given=True)  # the order and spelling given, as predict
    if not files:
        raise HeadstartError(f"no images found in {', '.join(map(str, args.images))}.")
    rows = explain(load(args.model), files, classes=args.classes or (), out=args.out)
    for r in rows:
        if r.error:
            print(f"{r.file}: ERROR {r.error}")
            continue
        maps = ", ".join(f"{m.target} {m.score:.2f}" + (" (predicted)" if m.predicted else "") for m in r.maps)
        print(f"{r.file}: {maps} -> {r.png}")
    failed = sum(bool(r.error) for r in rows)
    print(f"wrote {len(rows) - failed} pictures and explain.json to {args.out}"
          + (f"; {failed} files could not be read" if failed else ""), file=sys.stderr)
    return 0


def register(sub) -> None:
    p = sub.add_parser("explain", help="heat maps (Grad-CAM) of where in each image a prediction comes from")
    p.add_argument("model", help="model folder")
    p.add_argument("images", nargs="+", help="image files or folders")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for one PNG per image and explain.json")
    p.add_argument("--class", dest="classes", action="append", metavar="NAME",
                   help="also show the heat map of this class or label (repeatable; 'value' for numbers)")
    p.set_defaults(run=cmd_explain)
