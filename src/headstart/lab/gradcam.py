"""Why this label: heat maps from gradients over a backbone's feature maps.

For a target (a class, a label, or the predicted number), the gradient of the head's raw output
for it with respect to the feature map ``A`` (K, h, w) weighs the activations: at each place by
its own gradient (gradient x activation, the default) or by each channel's spatial mean
(Grad-CAM, Selvaraju et al. 2017). The map is ``relu(sum_k weight_k * A_k)``, scaled to 0..1 and
enlarged to the input. Bright = the places that raise the target's score.

It needs gradients, so it runs the backbone in PyTorch (never ONNX Runtime), on every backbone
whose body makes feature maps: the embedded EfficientNet-Lite, timm CNNs, scratch CNNs.

>>> cams = grad_cam(backbone, head, task, x, [None])   # doctest: +SKIP  (None: the predicted class)
>>> cams[0].target, cams[0].cam.shape
('cat', (7, 7))
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import HeadstartError


@dataclass
class HeatMap:
    """One image's heat map for one target."""

    target: str            # the class or label (numeric tasks: "value")
    score: float           # the task's score for it: a probability, or the predicted number
    predicted: bool        # the target is the model's prediction for this image
    cam: np.ndarray        # (h, w) float in 0..1, at the feature map's resolution

    def upsampled(self, size: tuple[int, int]) -> np.ndarray:
        """The map enlarged (bilinear) to ``size`` = (height, width) of the input."""
        import torch
        import torch.nn.functional as F

        t = torch.from_numpy(np.ascontiguousarray(self.cam, np.float32))[None, None]
        return F.interpolate(t, size=size, mode="bilinear", align_corners=False)[0, 0].numpy()

    def peak(self, size: tuple[int, int]) -> tuple[int, int]:
        """(row, column) of the hottest input pixel: the centre of the hottest feature-map cell."""
        r, c = np.unravel_index(int(np.argmax(self.cam)), self.cam.shape)
        h, w = self.cam.shape
        return int((r + 0.5) * size[0] / h), int((c + 0.5) * size[1] / w)


def target_names(task) -> list[str]:
    """What one may ask a heat map for: the task's classes or labels, or "value" for a number."""
    return ["value"] if task.numeric else list(task.labels)


METHODS = ("grad-x-activation", "grad-cam")


def grad_cam(backbone, head, task, x, targets: list[str | None], method: str = "grad-x-activation"
             ) -> list[list[HeatMap]]:
    """Heat maps for inputs ``x`` (N, C, H, W): per image, one per entry of ``targets`` (None =
    the model's prediction for that image; a repeated target is given once). With several
    layers (``backbone.cam_layers()``), each layer's map is scaled to 0..1 at the finest
    resolution and the maps are summed.

    ``method``: "grad-x-activation" (the default: each place's activations times their own
    gradients, summed over channels) or "grad-cam" (activations weighed by each channel's mean
    gradient, Selvaraju et al.); the first localises better on ``benchmarks/localisation.py``
    (docs/see.md)."""
    if method not in METHODS:
        raise HeadstartError(f"unknown heat-map method {method!r}; known: {', '.join(METHODS)}.")
    import torch

    layers = cam_layers(backbone, x[:1])
    wanted = [_check_target(task, t) for t in targets]
    saved: dict[int, torch.Tensor] = {}
    handles = [m.register_forward_hook(lambda _m, _i, out, k=k: saved.__setitem__(k, out))
               for k, m in enumerate(layers)]
    was = backbone.training, head.training
    backbone.eval(), head.eval()
    try:
        with torch.enable_grad():
            device = next(backbone.parameters()).device
            xt = torch.as_tensor(x).float().to(device).requires_grad_(True)  # gradients flow even into frozen weights
            out = head(backbone(xt))  # (N, out_dim) raw
            scores = task.activate(out.detach().float().cpu().numpy())
            picks = _predicted(task, scores)
            per_image: list[list[HeatMap]] = [[] for _ in range(len(x))]
            for target in dict.fromkeys(wanted):
                idx = [p if target is None else target for p in picks]
                raw = torch.stack([_raw_score(task, out[i], j) for i, j in enumerate(idx)])
                acts = [saved[k] for k in range(len(layers))]
                grads = torch.autograd.grad(raw.sum(), acts, retain_graph=True)
                cams = _cams(acts, grads, method)
                for i, j in enumerate(idx):
                    if any(m.target == _name(task, j) for m in per_image[i]):
                        continue
                    per_image[i].append(HeatMap(_name(task, j), _score(task, scores[i], j), j == picks[i], cams[i]))
    finally:
        for h in handles:
            h.remove()
        backbone.train(was[0]), head.train(was[1])
    return per_image


def cam_layers(backbone, x1) -> list:
    """The modules whose outputs Grad-CAM weighs: the backbone's own choice (``cam_layers``) or
    the last module, in the order they run, that outputs a feature map larger than 1 x 1."""
    import torch

    chosen = getattr(backbone, "cam_layers", lambda: None)()
    if chosen:
        return list(chosen)
    seen: list = []
    hooks = [m.register_forward_hook(lambda m, _i, o: seen.append(m) if _is_map(o) else None)
             for m in backbone.modules() if m is not backbone]
    try:
        with torch.no_grad():
            backbone.eval()(torch.as_tensor(x1).float().to(next(backbone.parameters()).device))
    finally:
        for h in hooks:
            h.remove()
    if not seen:
        raise HeadstartError(
            f"backbone {backbone.name!r} makes no feature map larger than 1 x 1, so there is nowhere to put a "
            "heat map (Grad-CAM needs a convolutional body). Explain a model built on a CNN, e.g. the default "
            "efficientnet_lite0 or a scratch CNN with fewer pooling steps.")
    return [seen[-1]]


def _is_map(out) -> bool:
    return hasattr(out, "ndim") and out.ndim == 4 and out.shape[2] * out.shape[3] > 1


def _cams(acts: list, grads: list, method: str = "grad-x-activation") -> list[np.ndarray]:
    """Per image: the sum over layers of relu(sum_k w_k * A_k), with w_k = grad_k at each place
    (grad-x-activation) or its spatial mean (grad-cam), each layer's map scaled to 0..1 at the
    finest layer's resolution; the sum scaled to 0..1."""
    import torch.nn.functional as F

    size = max((a.shape[2:] for a in acts), key=lambda s: s[0] * s[1])
    total = 0
    for a, g in zip(acts, grads):
        w = g if method == "grad-x-activation" else g.mean((2, 3), keepdim=True)
        cam = (w * a).sum(1, keepdim=True).clamp_min(0).detach().float()  # (N, 1, h, w)
        if tuple(cam.shape[2:]) != tuple(size):
            cam = F.interpolate(cam, size=tuple(size), mode="bilinear", align_corners=False)
        total = total + cam / cam.flatten(1).amax(1).clamp_min(1e-12)[:, None, None, None]
    out = []
    for c in total[:, 0].cpu().numpy():
        hi = float(c.max())
        out.append(c / hi if hi > 0 else np.zeros_like(c))
    return out


def _check_target(task, target: str | None):
    """A class / label name -> its index (numeric tasks: 0); None stays None (the prediction)."""
    if target is None:
        return None
    names = target_names(task)
    if target not in names:
        raise HeadstartError(f"cannot explain {target!r}: this model's {task.name} task has "
                             f"{'only a number (ask for value)' if task.numeric else 'the classes ' + str(names)}.")
    return names.index(target)


def _predicted(task, scores: np.ndarray) -> list[int]:
    if task.numeric:
        return [0] * len(scores)
    if task.has_classes:
        return [int(i) for i in task.predicted_index(scores)]
    return [int(i) for i in scores.argmax(1)]  # multilabel: the most probable label


def _raw_score(task, out_row, j: int):
    """The head's raw output that raises target ``j``: a logit, or the number itself."""
    if task.has_classes and task.out_dim == 1:  # binary: one logit for the second class
        return out_row[0] if j == 1 else -out_row[0]
    return out_row[j]


def _score(task, row: np.ndarray, j: int) -> float:
    return float(row[0] if task.numeric else row[j])


def _name(task, j: int) -> str:
    return target_names(task)[j]


# ---- pictures -------------------------------------------------------------------------------
def overlay(picture: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The picture (H, W, 3) uint8 with ``heat`` (H, W) in 0..1 laid over it in colour
    (blue = cold, red = hot); hotter places are covered more."""
    t = np.clip(heat, 0, 1)[..., None]
    colour = np.clip(1.5 - np.abs(4 * t - np.array([3.0, 2.0, 1.0])), 0, 1) * 255  # jet: r, g, b
    a = alpha * (0.3 + 0.7 * t)
    return np.uint8(np.clip(picture * (1 - a) + colour * a, 0, 255))


def render(picture: np.ndarray, maps: list[HeatMap], title: str = "", tile: int = 224) -> "Image.Image":  # noqa: F821
    """One picture: the input, then one panel per heat map, each captioned with its target."""
    from PIL import Image, ImageDraw

    pad, text_h = 6, 16
    h, w = picture.shape[:2]
    panels = [("input", picture)] + [
        (f"{m.target} {m.score:.2f}" + (" (predicted)" if m.predicted else ""), overlay(picture, m.upsampled((h, w))))
        for m in maps]
    size = (tile, max(1, round(tile * h / w)))
    top = text_h if title else 0
    canvas = Image.new("RGB", (pad + len(panels) * (size[0] + pad), top + text_h + size[1] + pad), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((pad, 2), title, fill="black")
    for k, (caption, pixels) in enumerate(panels):
        x = pad + k * (size[0] + pad)
        draw.text((x, top + 2), caption, fill="black")
        canvas.paste(Image.fromarray(pixels).resize(size, Image.Resampling.BILINEAR), (x, top + text_h))
    return canvas
