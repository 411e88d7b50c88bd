"""The book's one palette and figure helpers: a colour per variant and per kernel, crisp SVG output."""

from __future__ import annotations

from ..variants import TABLE

PALETTE = {name: row.color for name, row in TABLE.items()}
"""Variant name -> colour (variants.TABLE's, Okabe-Ito), in the table's order."""

KERNEL_COLORS = {
    "softmax": PALETTE["baseline"],  # the reference / eager softmax attention
    "math": PALETTE["baseline"],
    "sdpa": PALETTE["sdpa"],
    "exact": PALETTE["flash"],
    "flash": PALETTE["flash"],
    "varlen": "#004D38",  # a darker green: padding-free flash
    "linear": PALETTE["linear"],
    "favor+": PALETTE["linear"],
    "elu": "#E69F00",  # orange: the other linear feature map
}
"""Attention mechanism (kernel) name -> colour, consistent with PALETTE."""

COMPONENT_COLORS = {
    "qkv_proj": "#9ecae1",
    "out_proj": "#6baed6",
    "ffn": "#3182bd",  # dense, linear in N: blues
    "scores": "#fdae6b",
    "softmax": "#e6550d",
    "pv": "#a63603",  # the N^2 attention core: oranges
}
"""Cost component (attnpaper.analysis.cost.layer_flops keys) -> colour: the dense parts blue, the core orange."""

MEMORY_COLORS = {
    "weights": "#d9d9d9",
    "gradients": "#bdbdbd",
    "optimizer": "#969696",
    "activations and temporaries": "#E69F00",
}
"""Parts of the peak GPU memory: the static parts grey, the activations orange."""

DISTINCT = ("#000000", "#E69F00", "#56B4E9", "#009E73", "#0072B2", "#D55E00", "#CC79A7")
"""Okabe-Ito's colours but yellow (too faint on white), for a figure whose lines must each be told apart."""
MARKERS = ("o", "s", "^", "D", "v", "P", "X")
"""One marker per line, with DISTINCT, so that lines differ in shape as well as colour."""

PAPER_COLOR = "#000000"
"""The paper's own numbers (drawn as black crosses)."""
PAPER_MARKER = "x"
REFERENCE_COLOR = "#999999"
"""Guides: reference slopes, ridge points, unit lines."""


def color(name: str) -> str:
    """The colour of a variant (variants.TABLE, read now) or kernel name (KeyError for an unknown name)."""
    return TABLE[name].color if name in TABLE else KERNEL_COLORS[name]


def setup(fmt: str = "svg") -> None:
    """Notebook figures as SVG (or '2x' retina PNG), with the palette as the default colour cycle."""
    import matplotlib as mpl
    from cycler import cycler

    mpl.rcParams.update(
        {
            "axes.prop_cycle": cycler(color=[v.color for v in TABLE.values()] + ["#E69F00", "#F0E442", "#000000"]),
            "figure.figsize": (6.4, 3.4),
            "figure.dpi": 100,
            "savefig.dpi": 200,
            "font.size": 10,
            "axes.titlesize": 10,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "legend.frameon": False,
            "svg.fonttype": "path",
            "figure.autolayout": False,
            "figure.constrained_layout.use": True,
        }
    )
    try:
        from matplotlib_inline.backend_inline import set_matplotlib_formats
    except ImportError:  # plain Python: nothing to configure for inline display
        return
    set_matplotlib_formats("retina" if fmt == "2x" else fmt)


def shades(name: str, n: int) -> list[str]:
    """n shades of a variant's or kernel's colour, light to full (for curves of one mechanism)."""
    from matplotlib.colors import to_hex, to_rgb

    full = to_rgb(color(name))
    mix = [0.45 + 0.55 * i / max(1, n - 1) for i in range(n)]
    return [to_hex(tuple(1 - t * (1 - c) for c in full)) for t in mix]


def log_ticks(axis, values, fmt="{:g}") -> None:
    """Label a log axis at exactly these values, with no minor labels (they overlap)."""
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator

    axis.set_major_locator(FixedLocator(list(values)))
    axis.set_ticklabels([fmt.format(v) for v in values])
    axis.set_minor_locator(NullLocator())
    axis.set_minor_formatter(NullFormatter())


def glue_figure(name: str, fig) -> None:
    """Glue a figure for a numbered, captioned {glue:figure} and close it (so it is not shown twice)."""
    import matplotlib.pyplot as plt
    from myst_nb import glue

    glue(name, fig, display=False)
    plt.close(fig)
