"""``headstart label IMAGE...``: the embedded backbone's own ImageNet top-k, as it was trained."""

from __future__ import annotations

import json

from ..errors import HeadstartError


def cmd_label(args) -> int:
    from ..backbones.imagenet import label_images
    from ..data.scan import find_images

    files = find_images(args.images, as_given=True)  # the order and spelling given, as predict
    if not files:
        raise HeadstartError(f"no images found in {', '.join(map(str, args.images))}.")
    rows = label_images(files, backbone=args.backbone, top_k=args.top_k)
    if args.format == "json":
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        if "error" in r:
            print(f"{r['file']}: ERROR {r['reason']}: {r['error']}")
            continue
        print(f"{r['file']}:")
        for t in r["top"]:
            print(f"  {t['probability']:7.2%}  {t['label']}  (ImageNet class {t['index']})")
    return 0


def register(sub) -> None:
    p = sub.add_parser("label", help="the backbone's own ImageNet classes for images (before any retraining)")
    p.add_argument("images", nargs="+", help="image files or folders")
    p.add_argument("--top-k", type=int, default=5, help="classes shown per image (default 5)")
    p.add_argument("--backbone", default="efficientnet_lite0",
                   help="an embedded backbone (default efficientnet_lite0; `headstart backbones` lists them)")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.set_defaults(run=cmd_label)
