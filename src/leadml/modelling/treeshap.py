"""Exact path-dependent TreeSHAP for LightGBM boosters, many times faster than ``pred_contrib``.

LightGBM's own ``predict(pred_contrib=True)`` runs the classic recursive TreeSHAP
(Lundberg et al., arXiv:1802.03888): per row and tree it extends and unwinds a path
polynomial at every node, O(leaves x depth^2). This module gives the same numbers from
a different factorisation, the one behind FastTreeSHAP v2 and WOODELF:

For one leaf with value ``V`` whose root path tests the distinct features ``j = 1..D``,
the path-dependent value function is a product game:
``v(S) = V * prod_{j in S} a_j * prod_{j not in S} r_j``, where ``a_j`` is 1 when the
row satisfies every test of feature ``j`` on the path and ``r_j`` is the share of the
training rows (LightGBM's data counts) that follow the path's branches on ``j``. Its
Shapley values depend on the row only through the D-bit pattern ``a``. So, once per
model, every leaf gets a table of its D Shapley values for each of its 2^D patterns;
per row and tree the pattern of every leaf is one pass over the internal nodes and the
contributions are table look-ups. Leaves deeper than ``max_table_depth`` distinct
features (rare: table size doubles with each) compute their values per row instead.

The kernel is compiled with numba and runs row blocks in parallel; decisions follow
LightGBM's ``NumericalDecision``/``CategoricalDecision`` exactly (missing types, default
directions, categorical bitsets). Tests cross-check it against ``pred_contrib`` on
random models. The result has LightGBM's layout: one column per feature, then the
expected value (the base value), in raw-score (log-odds) units.

Random-forest boosters (``boosting="rf"``, an ``average_output`` line in the model text)
are explained like any other, tree values as stored: LightGBM's ``pred_contrib`` and
``predict(raw_score=True)`` both SUM the trees' outputs in that mode (``GBDT::PredictRaw``);
only the transformed ``predict()`` divides by the number of trees first. So, as there, the
contributions add up to the raw score, and the model's probability is
``sigmoid(raw score / n_trees)`` (:attr:`FastTreeExplainer.average_output`, ``.n_trees``).
Rescaling the trees by ``1 / n_trees`` here would break the equality with both.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numba
import numpy as np
import pandas as pd

from leadml.errors import LeadmlError

logger = logging.getLogger(__name__)

DEFAULT_MAX_TABLE_DEPTH = 10  # a depth-10 leaf's table is 1024 patterns x 10 values = 80 kB
MAX_PATH_FEATURES = 62  # patterns are int64 bit sets
ROWS_PER_BLOCK = 256  # rows a task explains tree by tree: its columns and patterns stay in cache

# decision_type bits of LightGBM's model text (include/LightGBM/tree.h)
_CATEGORICAL_MASK, _DEFAULT_LEFT_MASK = 1, 2
_MISSING_NONE, _MISSING_ZERO, _MISSING_NAN = 0, 1, 2
_ZERO_THRESHOLD = float(np.float32(1e-35))  # LightGBM's kZeroThreshold, a float


class UnsupportedModelError(LeadmlError):
    """The booster has a structure this explainer does not cover (use LightGBM's own TreeSHAP)."""


@dataclass(frozen=True)
class _Tree:
    num_leaves: int
    split_feature: np.ndarray
    threshold: np.ndarray
    decision_type: np.ndarray
    left_child: np.ndarray
    right_child: np.ndarray
    leaf_value: np.ndarray
    leaf_count: np.ndarray
    internal_count: np.ndarray
    cat_boundaries: np.ndarray
    cat_threshold: np.ndarray


def _parse_model(text: str) -> tuple[int, list[_Tree], bool]:
    """Number of features, the trees of LightGBM's text model format, and its ``average_output`` flag.

    The flag (random-forest mode) is a bare header line; the tree values are used as they are,
    since LightGBM's raw score and ``pred_contrib`` sum them in that mode too (module docstring).
    """
    header, _, body = text.partition("\nTree=")
    average_output = any(line.strip() == "average_output" for line in header.splitlines())
    body = body.partition("end of trees")[0]
    fields = dict(line.split("=", 1) for line in header.splitlines() if "=" in line)
    if int(fields.get("num_tree_per_iteration", "1")) != 1:
        raise UnsupportedModelError("fast TreeSHAP covers single-output (binary or regression) boosters")
    n_features = int(fields["max_feature_idx"]) + 1
    trees = []
    for block in body.split("\nTree="):
        values = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        if values.get("is_linear", "0") != "0":
            raise UnsupportedModelError("fast TreeSHAP does not cover linear trees")
        trees.append(_tree_from_fields(values))
    return n_features, trees, average_output


def _numbers(values: dict[str, str], key: str, dtype: type) -> np.ndarray:
    text = values.get(key, "").strip()
    return np.array(text.split(), dtype=np.float64).astype(dtype) if text else np.empty(0, dtype=dtype)


def _tree_from_fields(values: dict[str, str]) -> _Tree:
    return _Tree(
        num_leaves=int(values["num_leaves"]),
        split_feature=_numbers(values, "split_feature", np.int32),
        threshold=_numbers(values, "threshold", np.float64),
        decision_type=_numbers(values, "decision_type", np.int32),
        left_child=_numbers(values, "left_child", np.int32),
        right_child=_numbers(values, "right_child", np.int32),
        leaf_value=_numbers(values, "leaf_value", np.float64),
        leaf_count=_numbers(values, "leaf_count", np.float64),
        internal_count=_numbers(values, "internal_count", np.float64),
        cat_boundaries=_numbers(values, "cat_boundaries", np.int64),
        cat_threshold=_numbers(values, "cat_threshold", np.uint32),
    )


@dataclass(frozen=True)
class _Leaf:
    value: float
    features: list[int]  # distinct features on the root path, in order of first test
    zero_fractions: list[float]  # share of training rows following the path on each of them


def _walk(tree: _Tree) -> tuple[np.ndarray, np.ndarray, list[_Leaf]]:
    """Per internal node its path slot and whether it opens a new one; per leaf its path game."""
    n_nodes = tree.num_leaves - 1
    slot = np.zeros(n_nodes, dtype=np.int8)
    is_new = np.zeros(n_nodes, dtype=np.bool_)
    leaves: list[_Leaf | None] = [None] * tree.num_leaves

    def count(child: int) -> float:
        return tree.leaf_count[~child] if child < 0 else tree.internal_count[child]

    stack: list[tuple[int, list[int], list[float]]] = [(0, [], [])]
    while stack:
        node, features, fractions = stack.pop()
        feature = int(tree.split_feature[node])
        if feature in features:
            slot[node], is_new[node] = features.index(feature), False
        else:
            slot[node], is_new[node] = len(features), True
        if slot[node] >= MAX_PATH_FEATURES:
            raise UnsupportedModelError(f"a tree path tests more than {MAX_PATH_FEATURES} distinct features")
        parent_count = tree.internal_count[node]
        for child in (int(tree.left_child[node]), int(tree.right_child[node])):
            share = count(child) / parent_count if parent_count > 0 else 0.0
            child_features, child_fractions = list(features), list(fractions)
            if is_new[node]:
                child_features.append(feature)
                child_fractions.append(share)
            else:
                child_fractions[slot[node]] *= share
            if child < 0:
                leaves[~child] = _Leaf(float(tree.leaf_value[~child]), child_features, child_fractions)
            else:
                stack.append((child, child_features, child_fractions))
    return slot, is_new, [leaf for leaf in leaves if leaf is not None]


def _shapley_weights(max_features: int) -> np.ndarray:
    """``w[d, k] = k! (d-1-k)! / d!``: the Shapley weight of a coalition of k among d players."""
    weights = np.zeros((max_features + 1, max_features + 1))
    for d in range(1, max_features + 1):
        for k in range(d):
            weights[d, k] = 1.0 / (d * math.comb(d - 1, k))
    return weights


@numba.njit(cache=True, nogil=True)
def _leaf_phi(
    zero: np.ndarray, start: int, depth: int, pattern: int, value: float, weights: np.ndarray,
    poly: np.ndarray, quotient: np.ndarray, phi: np.ndarray,
) -> None:  # fmt: skip
    """Shapley values of one leaf's product game for one pattern, into ``phi[:depth]``.

    ``poly`` holds the coefficients of prod_j (r_j + a_j z); dividing out one player's
    factor leaves the coalition-size polynomial of the others, weighted by Shapley weights.
    """
    poly[0] = 1.0
    degree = 0
    for j in range(depth):
        r = zero[start + j]
        if (pattern >> j) & 1:
            poly[degree + 1] = poly[degree]
            for k in range(degree, 0, -1):
                poly[k] = poly[k] * r + poly[k - 1]
            poly[0] = poly[0] * r
            degree += 1
        else:
            for k in range(degree + 1):
                poly[k] *= r
    for i in range(depth):
        r = zero[start + i]
        total = 0.0
        if (pattern >> i) & 1:  # divide by (z + r) from the leading coefficient: stable for r <= 1
            quotient[degree - 1] = poly[degree]
            for k in range(degree - 1, 0, -1):
                quotient[k - 1] = poly[k] - r * quotient[k]
            for k in range(degree):
                total += quotient[k] * weights[depth, k]
            phi[i] = value * (1.0 - r) * total
        else:
            # the others' polynomial is poly / r, so the factor (0 - r) / r is just -1
            for k in range(degree + 1):
                total += poly[k] * weights[depth, k]
            phi[i] = -value * total


@numba.njit(cache=True)
def _fill_tables(
    leaf_depth: np.ndarray, leaf_zero_start: np.ndarray, zero: np.ndarray, leaf_value: np.ndarray,
    leaf_table: np.ndarray, weights: np.ndarray, tables: np.ndarray,
) -> None:  # fmt: skip
    poly = np.zeros(MAX_PATH_FEATURES + 2)
    quotient = np.zeros(MAX_PATH_FEATURES + 2)
    phi = np.zeros(MAX_PATH_FEATURES + 2)
    for leaf in range(leaf_depth.shape[0]):
        begin = leaf_table[leaf]
        if begin < 0:
            continue
        depth = leaf_depth[leaf]
        for pattern in range(1 << depth):
            _leaf_phi(
                zero, leaf_zero_start[leaf], depth, pattern, leaf_value[leaf], weights, poly, quotient, phi
            )
            for i in range(depth):
                tables[begin + pattern * depth + i] = phi[i]


@numba.njit(cache=True, inline="always")
def _goes_left(x: float, threshold: float, decision: int, cat_words: np.ndarray, cat_begin: int,
               cat_size: int) -> bool:  # fmt: skip
    if decision & 1:  # categorical: the category's bit in the node's bitset; NaN and negatives go right
        if np.isnan(x) or x <= -1.0 or x >= 2147483648.0:
            return False
        position = int(x)
        word = position >> 5
        if word >= cat_size:
            return False
        return ((cat_words[cat_begin + word] >> np.uint32(position & 31)) & np.uint32(1)) == 1
    missing = (decision >> 2) & 3
    # LightGBM reads dense rows as sparse ones: a value within kZeroThreshold of zero is 0.0
    if (np.isnan(x) and missing != 2) or -_ZERO_THRESHOLD <= x <= _ZERO_THRESHOLD:
        x = 0.0
    if (missing == 1 and x == 0.0) or (missing == 2 and np.isnan(x)):
        return (decision & 2) != 0
    return x <= threshold


@numba.njit(parallel=True, cache=True)
def _explain_rows(
    rows: np.ndarray, tree_node_start: np.ndarray, tree_leaf_start: np.ndarray,
    node_feature: np.ndarray, node_threshold: np.ndarray, node_decision: np.ndarray,
    node_cat_begin: np.ndarray, node_cat_size: np.ndarray, cat_words: np.ndarray,
    node_left: np.ndarray, node_right: np.ndarray, node_slot: np.ndarray, node_is_new: np.ndarray,
    leaf_depth: np.ndarray, leaf_zero_start: np.ndarray, leaf_feature: np.ndarray, zero: np.ndarray,
    leaf_value: np.ndarray, leaf_table: np.ndarray, tables: np.ndarray, weights: np.ndarray,
    max_nodes: int, block: int, out: np.ndarray,
) -> None:  # fmt: skip
    """Adds every tree's contributions to ``out``, one block of rows per task, tree by tree.

    Within a block the rows are held column-wise, so one node tests one contiguous column
    and one leaf's look-ups stream over the block.
    """
    n_rows, n_features = rows.shape
    n_trees = tree_node_start.shape[0] - 1
    n_blocks = (n_rows + block - 1) // block
    for b in numba.prange(n_blocks):
        first = b * block
        size = min(n_rows, first + block) - first
        columns = np.empty((n_features, size))
        for r in range(size):
            for f in range(n_features):
                columns[f, r] = rows[first + r, f]
        acc = np.zeros((n_features, size))
        node_pattern = np.zeros((max_nodes + 1, size), dtype=np.int64)
        leaf_pattern = np.zeros((max_nodes + 2, size), dtype=np.int64)
        poly = np.zeros(MAX_PATH_FEATURES + 2)
        quotient = np.zeros(MAX_PATH_FEATURES + 2)
        phi = np.zeros(MAX_PATH_FEATURES + 2)
        for t in range(n_trees):
            node_begin = tree_node_start[t]
            n_nodes = tree_node_start[t + 1] - node_begin
            leaf_begin = tree_leaf_start[t]
            n_leaves = tree_leaf_start[t + 1] - leaf_begin
            if n_nodes == 0:
                continue  # a single leaf is all expected value
            node_pattern[0, :] = 0
            for k in range(n_nodes):
                g = node_begin + k
                bit = np.int64(1) << node_slot[g]
                opens = node_is_new[g]
                feature, threshold, decision = node_feature[g], node_threshold[g], node_decision[g]
                cat_begin, cat_size = node_cat_begin[g], node_cat_size[g]
                left_child, right_child = node_left[g], node_right[g]
                for r in range(size):
                    pattern = node_pattern[k, r]
                    if opens:
                        pattern |= bit
                    if _goes_left(columns[feature, r], threshold, decision, cat_words, cat_begin, cat_size):
                        left_pattern, right_pattern = pattern, pattern & ~bit
                    else:
                        left_pattern, right_pattern = pattern & ~bit, pattern
                    if left_child >= 0:
                        node_pattern[left_child, r] = left_pattern
                    else:
                        leaf_pattern[~left_child, r] = left_pattern
                    if right_child >= 0:
                        node_pattern[right_child, r] = right_pattern
                    else:
                        leaf_pattern[~right_child, r] = right_pattern
            for leaf in range(n_leaves):
                gl = leaf_begin + leaf
                depth = leaf_depth[gl]
                start = leaf_zero_start[gl]
                table = leaf_table[gl]
                if table >= 0:
                    for j in range(depth):
                        target = acc[leaf_feature[start + j]]
                        for r in range(size):
                            target[r] += tables[table + leaf_pattern[leaf, r] * depth + j]
                else:
                    for r in range(size):
                        _leaf_phi(
                            zero, start, depth, leaf_pattern[leaf, r], leaf_value[gl], weights,
                            poly, quotient, phi,
                        )  # fmt: skip
                        for j in range(depth):
                            acc[leaf_feature[start + j], r] += phi[j]
        for r in range(size):
            for f in range(n_features):
                out[first + r, f] = acc[f, r]


class FastTreeExplainer:
    """Exact TreeSHAP values of a LightGBM booster (same numbers as ``pred_contrib``).

    Built once per model (tables are precomputed here); :meth:`shap_values` takes the
    numeric matrix LightGBM predicts on (:func:`booster_matrix`).

    ``average_output`` is True for a random-forest booster: its contributions (like LightGBM's)
    add up to the sum of the ``n_trees`` trees' outputs, and ``booster.predict`` transforms
    that sum divided by ``n_trees``.
    """

    def __init__(self, model_text: str, max_table_depth: int = DEFAULT_MAX_TABLE_DEPTH) -> None:
        self.n_features, trees, self.average_output = _parse_model(model_text)
        self.n_trees = len(trees)
        self._build(trees, max_table_depth)

    @classmethod
    def from_booster(
        cls, booster: object, num_iteration: int | None = None, max_table_depth: int = DEFAULT_MAX_TABLE_DEPTH
    ) -> FastTreeExplainer:
        iteration = num_iteration if num_iteration and num_iteration > 0 else None
        return cls(booster.model_to_string(num_iteration=iteration), max_table_depth)  # type: ignore[attr-defined]

    def _build(self, trees: Sequence[_Tree], max_table_depth: int) -> None:
        node_start, leaf_start = [0], [0]
        node_keys = ("feature", "threshold", "decision", "cat_begin", "cat_size", "left", "right", "slot")
        nodes: dict[str, list[np.ndarray]] = {key: [] for key in (*node_keys, "is_new")}
        cat_words: list[np.ndarray] = []
        n_cat_words = 0
        leaves: list[_Leaf] = []
        expected = 0.0
        for tree in trees:
            if tree.num_leaves <= 1:
                expected += float(tree.leaf_value[0]) if tree.leaf_value.size else 0.0
                node_start.append(node_start[-1])
                leaf_start.append(leaf_start[-1])
                continue
            slot, is_new, tree_leaves = _walk(tree)
            n_nodes = tree.num_leaves - 1
            categorical = (tree.decision_type & _CATEGORICAL_MASK) != 0
            cat_index = np.where(categorical, tree.threshold, 0).astype(np.int64)
            begin = np.zeros(n_nodes, dtype=np.int64)
            size = np.zeros(n_nodes, dtype=np.int64)
            if categorical.any():
                bounds = tree.cat_boundaries
                begin[categorical] = n_cat_words + bounds[cat_index[categorical]]
                size[categorical] = bounds[cat_index[categorical] + 1] - bounds[cat_index[categorical]]
                cat_words.append(tree.cat_threshold)
                n_cat_words += tree.cat_threshold.size
            for key, column in (
                ("feature", tree.split_feature), ("threshold", tree.threshold),
                ("decision", tree.decision_type), ("cat_begin", begin), ("cat_size", size),
                ("left", tree.left_child), ("right", tree.right_child), ("slot", slot), ("is_new", is_new),
            ):  # fmt: skip
                nodes[key].append(column)
            leaves.extend(tree_leaves)
            total = float(tree.internal_count[0])
            expected += sum(
                float(v) * c / total for v, c in zip(tree.leaf_value, tree.leaf_count, strict=True)
            )
            node_start.append(node_start[-1] + n_nodes)
            leaf_start.append(leaf_start[-1] + len(tree_leaves))

        def joined(key: str, dtype: type) -> np.ndarray:
            parts = nodes[key]
            return np.concatenate(parts).astype(dtype) if parts else np.empty(0, dtype=dtype)

        self.expected_value = expected
        self._tree_node_start = np.array(node_start, dtype=np.int64)
        self._tree_leaf_start = np.array(leaf_start, dtype=np.int64)
        self._node_feature = joined("feature", np.int64)
        self._node_threshold = joined("threshold", np.float64)
        self._node_decision = joined("decision", np.int64)
        self._node_cat_begin = joined("cat_begin", np.int64)
        self._node_cat_size = joined("cat_size", np.int64)
        self._cat_words = np.concatenate(cat_words).astype(np.uint32) if cat_words else np.zeros(1, np.uint32)
        self._node_left = joined("left", np.int64)
        self._node_right = joined("right", np.int64)
        self._node_slot = joined("slot", np.int64)
        self._node_is_new = joined("is_new", np.bool_)
        self._max_nodes = int(np.diff(self._tree_node_start).max(initial=0))
        if self._node_feature.size and self._node_feature.max() >= self.n_features:
            raise UnsupportedModelError("a split names a feature beyond the model's feature count")

        depth = np.array([len(leaf.features) for leaf in leaves], dtype=np.int64)
        self._leaf_depth = depth
        self._leaf_zero_start = np.concatenate([[0], np.cumsum(depth)[:-1]]).astype(np.int64)
        self._leaf_feature = np.array([f for leaf in leaves for f in leaf.features], dtype=np.int64)
        self._zero = np.array([r for leaf in leaves for r in leaf.zero_fractions], dtype=np.float64)
        self._leaf_value = np.array([leaf.value for leaf in leaves], dtype=np.float64)
        tabled = depth <= max_table_depth
        sizes = np.where(tabled, (1 << np.minimum(depth, 62)) * depth, 0)
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self._leaf_table = np.where(tabled, offsets, -1).astype(np.int64)
        self._weights = _shapley_weights(MAX_PATH_FEATURES + 1)
        self._tables = np.zeros(int(sizes.sum()), dtype=np.float64)
        _fill_tables(
            self._leaf_depth, self._leaf_zero_start, self._zero, self._leaf_value,
            self._leaf_table, self._weights, self._tables,
        )  # fmt: skip
        logger.debug(
            "fast TreeSHAP: %d trees, %d leaves, tables %.1f MB, %d leaves computed per row",
            len(trees), len(leaves), self._tables.nbytes / 1e6, int((~tabled).sum()),
        )  # fmt: skip

    @property
    def table_bytes(self) -> int:
        return int(self._tables.nbytes)

    def shap_values(self, rows: np.ndarray) -> np.ndarray:
        """``(n, n_features + 1)`` contributions in raw-score units; the last column is the base value."""
        matrix = np.ascontiguousarray(rows, dtype=np.float64)
        if matrix.ndim != 2 or matrix.shape[1] != self.n_features:
            raise LeadmlError(
                f"expected a matrix of {self.n_features} feature columns, got shape {matrix.shape}"
            )
        out = np.zeros((matrix.shape[0], self.n_features + 1), dtype=np.float64)
        if matrix.shape[0]:
            _explain_rows(
                matrix, self._tree_node_start, self._tree_leaf_start, self._node_feature,
                self._node_threshold, self._node_decision, self._node_cat_begin, self._node_cat_size,
                self._cat_words, self._node_left, self._node_right, self._node_slot, self._node_is_new,
                self._leaf_depth, self._leaf_zero_start, self._leaf_feature, self._zero,
                self._leaf_value, self._leaf_table, self._tables, self._weights,
                self._max_nodes, ROWS_PER_BLOCK, out,
            )  # fmt: skip
        out[:, -1] = self.expected_value
        return out


def booster_matrix(prepared: pd.DataFrame) -> np.ndarray:
    """The float matrix LightGBM predicts on: numbers as they are, categoricals as codes (NaN if unseen).

    ``prepared`` is the output of ``models.prepare_features``: its categoricals carry the
    training categories, so their codes are the ones the booster was trained on.
    """
    matrix = np.empty((len(prepared), prepared.shape[1]), dtype=np.float64)
    for j, name in enumerate(prepared.columns):
        column = prepared[name]
        if isinstance(column.dtype, pd.CategoricalDtype):
            codes = column.cat.codes.to_numpy()
            matrix[:, j] = np.where(codes < 0, np.nan, codes)
        else:
            matrix[:, j] = column.to_numpy(dtype=np.float64, na_value=np.nan)
    return matrix
