"""Draw a micrograd computation graph with matplotlib (Karpathy's `draw_dot`, without graphviz).

Each `Value` is a box `label | data | grad`; the op that produced it is a small circle feeding the box.
Nodes are laid out left to right by depth (the longest path from a leaf; a leaf just before its first
use), so inputs sit on the left and the loss on the right.
"""
from __future__ import annotations


def graph_layout(root) -> dict:
    """node -> (x, y): x = depth from the leaves, y = rank within that depth (sorted by label for stability)."""
    order = root.topo()  # inputs before outputs
    depth, users = {}, {}
    for node in order:
        depth[node] = 1 + max((depth[c] for c in node._prev), default=-1)
        for c in node._prev:
            users.setdefault(c, []).append(node)
    for node in order:  # a leaf sits just left of its first user, not always in column 0
        if not node._prev and node in users:
            depth[node] = min(depth[u] for u in users[node]) - 1
    columns: dict[int, list] = {}
    for node in order:
        columns.setdefault(depth[node], []).append(node)
    pos = {}
    for x, nodes in columns.items():
        nodes.sort(key=lambda n: (n.label, n.data))
        for i, node in enumerate(nodes):
            pos[node] = (3.0 * x, 1.2 * (i - (len(nodes) - 1) / 2))
    return pos


def draw_graph(root, ax=None):
    """Plot the graph behind `root`; returns the matplotlib axes."""
    import matplotlib.pyplot as plt

    pos = graph_layout(root)
    xs = [x for x, _ in pos.values()]
    ys = [y for _, y in pos.values()]
    if ax is None:  # one inch per unit of x, so the boxes (about 1.5 in wide at 8 pt) fit between columns 3 apart
        _, ax = plt.subplots(figsize=(max(7.2, max(xs) - min(xs) + 2.6), 0.75 * (max(ys) - min(ys)) + 1.4))
    box = dict(boxstyle="round,pad=0.3", fc="white", ec="0.3")
    for node, (x, y) in pos.items():
        ax.text(x, y, f"{node.label or '·'}\ndata {node.data:.4g} | grad {node.grad:.4g}", ha="center", va="center",
                fontsize=8, bbox=box, zorder=3)
        if node._op:
            ox = x - 1.5
            ax.text(ox, y, node._op, ha="center", va="center", fontsize=8, zorder=3,
                    bbox=dict(boxstyle="circle,pad=0.25", fc="lightsteelblue", ec="0.3"))
            ax.annotate("", xy=(x - 0.8, y), xytext=(ox + 0.25, y), arrowprops=dict(arrowstyle="->", color="0.4"))
            for child in node._prev:
                cx, cy = pos[child]
                ax.annotate("", xy=(ox - 0.25, y), xytext=(cx + 0.8, cy), zorder=1,
                            arrowprops=dict(arrowstyle="->", color="0.6"))
    ax.set_xlim(min(xs) - 1.3, max(xs) + 1.3)
    ax.set_ylim(min(ys) - 0.7, max(ys) + 0.7)
    ax.axis("off")
    return ax
