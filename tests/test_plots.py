"""The schematic helper the method chapters draw their figures with."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
def test_draw_schematic_draws_every_box_and_arrow_and_rejects_bad_input():
    import matplotlib.text

    from dcl_lib.plots import draw_schematic

    nodes = {"x": (0, 0, "data", "data"), "f": (2, 0, "net $f$", "net"),
             "L": (4, 1, "loss", "loss")}
    ax = draw_schematic(nodes, [("x", "f"), ("f", "L", "label", "--")])
    texts = [t.get_text() for t in ax.texts]
    assert {"data", "net $f$", "loss", "label"} <= set(texts)
    arrows = [c for c in ax.get_children() if isinstance(c, matplotlib.text.Annotation)]
    assert len(arrows) == 2 and arrows[1].arrow_patch.get_linestyle() == "--"
    with pytest.raises(ValueError, match="node kinds"):
        draw_schematic({"x": (0, 0, "a", "box")}, [])
    with pytest.raises(ValueError, match="unknown nodes"):
        draw_schematic(nodes, [("x", "nowhere")])
    plt.close("all")


def test_plot_partitions_2d_draws_one_panel_per_partition_and_one_for_the_samples():
    import numpy as np

    from dcl_lib.plots import plot_partitions_2d

    X = np.random.default_rng(0).normal(size=(50, 2))
    fig = plot_partitions_2d(X, [(X[:, 0] > 0, "a"), (X[:, 1] > 0, "b")],
                             samples=np.zeros((3, 10, 2)))
    assert [ax.get_title() for ax in fig.axes] == ["a", "b", "samples of the generators"]
    assert len(fig.axes[0].collections[0].get_offsets()) == 50
    assert len(fig.axes[2].collections) == 3
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        plot_partitions_2d(np.zeros((5, 3)), [])
    plt.close("all")
