"""Tests for the PCGrad optax transform (jaxmt.optim.pcgrad)."""

from __future__ import annotations

import chex
import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxmt.optim import (
    PCGradState,
    find_pcgrad_state,
    pcgrad,
    pcgrad_diagnostics,
    projection_coefficients,
    task_orders,
)

# --------------------------------------------------------------------------------------------------
# Plain NumPy reference of Algorithm 1 (float64, explicit vectors, sequential projections).
# --------------------------------------------------------------------------------------------------


def ref_pcgrad(grads: np.ndarray, orders: np.ndarray, reduction: str = "sum"):
    """grads: [T, D] float. Returns (combined [D], projected per-task [T, D], num_conflicts, cosine)."""
    g = np.asarray(grads, dtype=np.float64)
    num_tasks = g.shape[0]
    projected = g.copy()
    conflicts = 0
    for i in range(num_tasks):
        gi = g[i].copy()
        for j in orders[i]:
            dot = gi @ g[j]
            norm_sq = g[j] @ g[j]
            if dot < 0 and norm_sq > 0:
                gi = gi - dot / norm_sq * g[j]
                conflicts += 1
        projected[i] = gi
    combined = projected.sum(0) if reduction == "sum" else projected.mean(0)
    norms = np.linalg.norm(g, axis=1)
    denom = np.outer(norms, norms)
    gram = g @ g.T
    cosine = np.where(denom > 0, gram / np.where(denom > 0, denom, 1.0), 0.0)
    return combined, projected, conflicts, cosine


def flatten_tasks(tree, num_tasks: int) -> np.ndarray:
    """Stacked pytree -> [T, D] (the reference may ravel; the transform must not)."""
    return np.concatenate(
        [np.asarray(x, np.float64).reshape(num_tasks, -1) for x in jax.tree.leaves(tree)], axis=1
    )


def unflatten(vec: np.ndarray, like):
    """[D] -> pytree with the (unstacked) leaf shapes of ``like``."""
    leaves, treedef = jax.tree.flatten(like)
    out, offset = [], 0
    for leaf in leaves:
        size = int(np.prod(leaf.shape))
        out.append(vec[offset : offset + size].reshape(leaf.shape))
        offset += size
    return jax.tree.unflatten(treedef, out)


def step_orders(state: PCGradState, num_tasks: int) -> np.ndarray:
    """The orders pcgrad's update uses for the step taken from ``state`` (documented contract)."""
    order_key, _ = jax.random.split(state.key)
    return np.asarray(task_orders(order_key, num_tasks))


SHAPES = {"enc": {"w": (3, 4), "b": (4,)}, "head": (2, 2, 2), "scalar": ()}


def random_tree(rng: np.random.Generator, num_tasks: int, dtype=np.float32):
    return jax.tree.map(
        lambda s: jnp.asarray(rng.normal(size=(num_tasks, *s)).astype(dtype)),
        SHAPES,
        is_leaf=lambda x: isinstance(x, tuple),
    )


def zeros_params():
    return jax.tree.map(lambda s: jnp.zeros(s, jnp.float32), SHAPES, is_leaf=lambda x: isinstance(x, tuple))


def run_step(tx, grads, params=None, state=None):
    state = tx.init(params if params is not None else zeros_params()) if state is None else state
    return tx.update(grads, state, params)


# --------------------------------------------------------------------------------------------------
# 1. Two-task closed forms.
# --------------------------------------------------------------------------------------------------


def _two(g1, g2, reduction="sum"):
    tx = pcgrad(2, reduction=reduction)
    grads = {"w": jnp.array([g1, g2], jnp.float32)}
    out, state = run_step(tx, grads, {"w": jnp.zeros(2)})
    return np.asarray(out["w"]), state


def test_two_tasks_conflicting_closed_form():
    # g1 . g2 = -1. g1' = g1 + 1/2 g2 = [0.5, 0.5]; g2' = g2 + 1/1 g1 = [0, 1].
    out, state = _two([1.0, 0.0], [-1.0, 1.0])
    np.testing.assert_allclose(out, [0.5, 1.5], rtol=1e-6)
    assert int(state.num_conflicts) == 2
    np.testing.assert_allclose(
        np.asarray(state.cosine), [[1, -1 / np.sqrt(2)], [-1 / np.sqrt(2), 1]], rtol=1e-6
    )
    out_mean, _ = _two([1.0, 0.0], [-1.0, 1.0], reduction="mean")
    np.testing.assert_allclose(out_mean, [0.25, 0.75], rtol=1e-6)


def test_two_tasks_orthogonal_unchanged():
    out, state = _two([1.0, 0.0], [0.0, 2.0])
    np.testing.assert_allclose(out, [1.0, 2.0])
    assert int(state.num_conflicts) == 0


def test_two_tasks_aligned_unchanged():
    out, state = _two([1.0, 2.0], [2.0, 3.0])
    np.testing.assert_allclose(out, [3.0, 5.0])
    assert int(state.num_conflicts) == 0


def test_two_tasks_opposite_cancel_to_zero():
    # Exactly opposite: each is projected onto the normal plane of the other -> both become 0.
    out, state = _two([1.0, -2.0], [-1.0, 2.0])
    np.testing.assert_allclose(out, [0.0, 0.0], atol=1e-6)
    assert int(state.num_conflicts) == 2


def test_zero_gradient_task_no_projection_no_nan():
    tx = pcgrad(3)
    grads = {"w": jnp.array([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [-1.0, 1.0, 0.0]])}
    out, state = run_step(tx, grads, {"w": jnp.zeros(3)})
    assert np.all(np.isfinite(np.asarray(out["w"])))
    assert np.all(np.isfinite(np.asarray(state.cosine)))
    assert int(state.num_conflicts) == 2  # only the (0, 2) and (2, 0) pairs
    np.testing.assert_allclose(np.asarray(state.cosine)[1], 0.0)


# --------------------------------------------------------------------------------------------------
# 2. Equality with the NumPy reference (same permutations), key handling.
# --------------------------------------------------------------------------------------------------


def test_task_orders_are_permutations_of_others():
    for num_tasks in (1, 2, 3, 5):
        orders = np.asarray(task_orders(jax.random.PRNGKey(num_tasks), num_tasks))
        chex.assert_shape(orders, (num_tasks, num_tasks - 1))
        for i in range(num_tasks):
            assert sorted(orders[i].tolist()) == [j for j in range(num_tasks) if j != i]


# (Configs are shared with other tests where possible: each new config costs an XLA compile.)
@pytest.mark.parametrize(
    ("num_tasks", "reduction"), [(2, "sum"), (3, "sum"), (4, "sum"), (5, "sum"), (4, "mean")]
)
def test_matches_numpy_reference(num_tasks, reduction):
    rng = np.random.default_rng(100 + num_tasks)
    tx = pcgrad(num_tasks, reduction=reduction, seed=num_tasks)
    update = tx.update
    state = tx.init(zeros_params())
    total_conflicts = 0
    for _ in range(3):  # several steps: the order changes each step and must still match
        grads = random_tree(rng, num_tasks)
        orders = step_orders(state, num_tasks)
        combined, _, conflicts, cosine = ref_pcgrad(flatten_tasks(grads, num_tasks), orders, reduction)
        out, state = update(grads, state, zeros_params())
        chex.assert_trees_all_equal_shapes_and_dtypes(out, zeros_params())
        chex.assert_trees_all_close(out, unflatten(combined, zeros_params()), rtol=1e-4, atol=1e-5)
        assert int(state.num_conflicts) == conflicts
        np.testing.assert_allclose(np.asarray(state.cosine), cosine, rtol=1e-5, atol=1e-6)
        total_conflicts += conflicts
    assert total_conflicts > 0  # the random data does exercise the projection path


def test_same_seed_same_result_and_key_advances():
    num_tasks = 5
    grads = random_tree(np.random.default_rng(0), num_tasks)
    tx = pcgrad(num_tasks, seed=7)
    out_a, state_a = run_step(tx, grads)
    out_b, state_b = run_step(pcgrad(num_tasks, seed=7), grads)
    chex.assert_trees_all_equal(out_a, out_b)
    chex.assert_trees_all_equal(state_a, state_b)

    # The key advances: a second step draws different orders than the first.
    state_0 = tx.init(zeros_params())
    assert not np.array_equal(np.asarray(state_0.key), np.asarray(state_a.key))
    orders_step0 = step_orders(state_0, num_tasks)
    orders_step1 = step_orders(state_a, num_tasks)
    assert not np.array_equal(orders_step0, orders_step1)
    # A different seed gives different orders.
    assert not np.array_equal(orders_step0, step_orders(pcgrad(num_tasks, seed=8).init(None), num_tasks))


def test_order_matters_and_is_the_one_from_task_orders():
    # With three mutually conflicting tasks the result depends on the order; the transform must
    # reproduce the reference with exactly the orders from ``task_orders``, not some other order.
    grads = {"w": jnp.array([[1.0, 0.1, 0.0], [-0.6, 1.0, 0.2], [-0.5, -0.7, 1.0]], jnp.float32)}
    params = {"w": jnp.zeros(3)}
    g = flatten_tasks(grads, 3)
    seen = set()
    for seed in range(12):
        tx = pcgrad(3, seed=seed)
        state = tx.init(params)
        orders = step_orders(state, 3)
        out, _ = tx.update(grads, state, params)
        combined, *_ = ref_pcgrad(g, orders)
        np.testing.assert_allclose(np.asarray(out["w"]), combined, rtol=1e-5, atol=1e-6)
        seen.add(tuple(np.round(combined, 5)))
    assert len(seen) > 1


# --------------------------------------------------------------------------------------------------
# 3. No conflict -> plain reduction.
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_no_conflict_is_plain_reduction(reduction):
    rng = np.random.default_rng(3)
    num_tasks = 4
    # Non-negative entries => all pairwise dots >= 0.
    grads = jax.tree.map(jnp.abs, random_tree(rng, num_tasks))
    out, state = run_step(pcgrad(num_tasks, reduction=reduction), grads)
    reduce = (lambda x: x.sum(0)) if reduction == "sum" else (lambda x: x.mean(0))
    chex.assert_trees_all_close(out, jax.tree.map(reduce, grads), rtol=1e-6, atol=1e-6)
    assert int(state.num_conflicts) == 0


def test_single_task_is_identity():
    grads = random_tree(np.random.default_rng(4), 1)
    out, state = run_step(pcgrad(1), grads)
    chex.assert_trees_all_close(out, jax.tree.map(lambda x: x[0], grads))
    assert int(state.num_conflicts) == 0
    chex.assert_shape(state.cosine, (1, 1))


# --------------------------------------------------------------------------------------------------
# 4. Hypothesis properties of the projection core.
# --------------------------------------------------------------------------------------------------


@st.composite
def task_grads(draw):
    num_tasks = draw(st.integers(2, 5))
    dim = draw(st.integers(1, 6))
    # Multiples of 1/8: no denormals or huge dynamic range, exact zeros and ties are possible.
    elems = st.integers(-40, 40).map(lambda v: v / 8.0)
    grads = draw(hnp.arrays(np.float64, (num_tasks, dim), elements=elems))
    seed = draw(st.integers(0, 2**31 - 1))
    return grads, seed


def _tol(a: np.ndarray, b: np.ndarray) -> float:
    return 1e-4 * float(np.linalg.norm(a) * np.linalg.norm(b)) + 1e-5


@settings(max_examples=30, deadline=None)
@given(task_grads())
def test_property_last_processed_pair_not_conflicting(data):
    grads, seed = data
    num_tasks = grads.shape[0]
    g = grads.astype(np.float32)
    orders = task_orders(jax.random.PRNGKey(seed), num_tasks)
    coeffs, projected = projection_coefficients(jnp.asarray(g @ g.T), orders)
    coeffs, projected, orders = np.asarray(coeffs, np.float64), np.asarray(projected), np.asarray(orders)
    g_proj = coeffs @ grads
    assert not projected[np.arange(num_tasks), np.arange(num_tasks)].any()
    for i in range(num_tasks):
        # After the last visited task, g_i' is never touched again, and the check at that point
        # either projected (making the dot 0) or found it non-negative.
        j_last = orders[i, -1]
        assert g_proj[i] @ grads[j_last] >= -_tol(g_proj[i], grads[j_last])
        # Likewise for the last task that actually triggered a projection: the dot is ~0.
        hits = [j for j in orders[i] if projected[i, j]]
        if hits:
            assert abs(g_proj[i] @ grads[hits[-1]]) <= _tol(g_proj[i], grads[hits[-1]])
        else:
            np.testing.assert_allclose(g_proj[i], grads[i], atol=1e-6)
    if num_tasks == 2:
        assert g_proj[0] @ grads[1] >= -_tol(g_proj[0], grads[1])
        assert g_proj[1] @ grads[0] >= -_tol(g_proj[1], grads[0])


@settings(max_examples=30, deadline=None)
@given(task_grads())
def test_property_matches_reference_projection(data):
    grads, seed = data
    num_tasks = grads.shape[0]
    g = grads.astype(np.float32)
    orders = task_orders(jax.random.PRNGKey(seed), num_tasks)
    coeffs, _ = projection_coefficients(jnp.asarray(g @ g.T), orders)
    _, ref_proj, _, _ = ref_pcgrad(grads, np.asarray(orders))
    # Sign decisions on exact ties may differ by rounding, but then the projection is ~0 anyway.
    scale = 1e-4 * (np.abs(grads).sum() + 1.0)
    np.testing.assert_allclose(np.asarray(coeffs, np.float64) @ grads, ref_proj, atol=scale)


# --------------------------------------------------------------------------------------------------
# 5. jit, sharding, mask, dtypes.
# --------------------------------------------------------------------------------------------------


def test_jit_matches_eager():
    num_tasks = 3
    grads = random_tree(np.random.default_rng(5), num_tasks)
    tx = pcgrad(num_tasks, seed=1)
    state = tx.init(zeros_params())
    out_eager, st_eager = tx.update(grads, state, zeros_params())
    out_jit, st_jit = jax.jit(tx.update)(grads, state, zeros_params())
    chex.assert_trees_all_close(out_eager, out_jit, rtol=1e-6, atol=1e-6)
    chex.assert_trees_all_close(st_eager, st_jit, rtol=1e-6, atol=1e-6)


def test_sharded_inputs_match_unsharded():
    num_tasks = 3
    mesh = Mesh(np.array(jax.devices()[:1]), ("data",))
    grads = random_tree(np.random.default_rng(6), num_tasks)
    tx = pcgrad(num_tasks, seed=2)
    state = tx.init(zeros_params())
    expected, exp_state = tx.update(grads, state, zeros_params())

    def shard(x):
        spec = P(None, "data") if x.ndim >= 2 else P()
        return jax.device_put(x, NamedSharding(mesh, spec))

    sharded = jax.tree.map(shard, grads)
    replicated = NamedSharding(mesh, P())
    state_sh = jax.device_put(state, replicated)
    out, new_state = jax.jit(tx.update)(sharded, state_sh, jax.device_put(zeros_params(), replicated))
    assert out["enc"]["w"].sharding.mesh.shape == mesh.shape or out["enc"]["w"].sharding.is_fully_replicated
    chex.assert_trees_all_close(out, expected, rtol=1e-6, atol=1e-6)
    chex.assert_trees_all_close(new_state, exp_state, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("callable_mask", [False, True])
def test_mask_passes_through_and_excludes_from_dots(callable_mask):
    num_tasks = 3
    rng = np.random.default_rng(7)
    grads = random_tree(rng, num_tasks)
    # Make the masked-out head huge and conflicting: it must not influence the surgery.
    grads["head"] = grads["head"] * 100.0
    mask = {"enc": True, "head": False, "scalar": True}  # prefix of the params tree
    mask_arg = (lambda p: jax.tree.map(lambda x: x.ndim != 3, p)) if callable_mask else mask
    tx = pcgrad(num_tasks, mask=mask_arg, seed=3)
    state = tx.init(zeros_params())
    orders = step_orders(state, num_tasks)
    out, new_state = tx.update(grads, state, zeros_params())

    np.testing.assert_allclose(np.asarray(out["head"]), np.asarray(grads["head"]).sum(0), rtol=1e-6)
    surgery = {"enc": grads["enc"], "scalar": grads["scalar"]}
    combined, _, conflicts, cosine = ref_pcgrad(flatten_tasks(surgery, num_tasks), orders)
    expected = unflatten(combined, {"enc": zeros_params()["enc"], "scalar": zeros_params()["scalar"]})
    chex.assert_trees_all_close({"enc": out["enc"], "scalar": out["scalar"]}, expected, rtol=1e-4, atol=1e-5)
    assert int(new_state.num_conflicts) == conflicts
    np.testing.assert_allclose(np.asarray(new_state.cosine), cosine, rtol=1e-5, atol=1e-6)


def test_mask_all_false_is_plain_sum():
    num_tasks = 3
    grads = random_tree(np.random.default_rng(8), num_tasks)
    out, state = run_step(pcgrad(num_tasks, mask=lambda p: jax.tree.map(lambda _: False, p)), grads)
    chex.assert_trees_all_close(out, jax.tree.map(lambda x: x.sum(0), grads), rtol=1e-6)
    assert int(state.num_conflicts) == 0


def test_bf16_inputs():
    num_tasks = 4
    grads32 = random_tree(np.random.default_rng(9), num_tasks)
    grads16 = jax.tree.map(lambda x: x.astype(jnp.bfloat16), grads32)
    tx = pcgrad(num_tasks, seed=4)
    params16 = jax.tree.map(lambda x: x.astype(jnp.bfloat16), zeros_params())
    state = tx.init(params16)
    out16, st16 = tx.update(grads16, state, params16)
    chex.assert_trees_all_equal_shapes_and_dtypes(out16, params16)
    chex.assert_type(st16.cosine, jnp.float32)
    chex.assert_type(st16.num_conflicts, jnp.int32)
    # Compare with the float32 computation on the same (bf16-rounded) values.
    out32, st32 = tx.update(jax.tree.map(lambda x: x.astype(jnp.float32), grads16), state, zeros_params())
    chex.assert_trees_all_close(
        jax.tree.map(lambda x: x.astype(jnp.float32), out16), out32, rtol=2e-2, atol=2e-2
    )
    np.testing.assert_allclose(np.asarray(st16.cosine), np.asarray(st32.cosine), rtol=1e-6, atol=1e-6)
    assert int(st16.num_conflicts) == int(st32.num_conflicts)


def test_accurate_on_a_large_leaf():
    # Three million terms per task in one leaf, as in a real embedding gradient: a single flat
    # float32 accumulation of the dot products drifts by ~1% here, the row-then-total reduction
    # must stay at float32 rounding. Conflicting tasks, so projections depend on those dots.
    rng = np.random.default_rng(11)
    base = rng.standard_normal((2048, 1536)).astype(np.float32)
    noise = rng.standard_normal((3, 2048, 1536)).astype(np.float32)
    stacked = np.stack([base, -0.5 * base, 0.2 * base]) + 0.5 * noise
    params = {"w": jnp.zeros((2048, 1536), jnp.float32)}
    tx = pcgrad(3, seed=0)
    state0 = tx.init(params)
    out, state = jax.jit(tx.update)({"w": jnp.asarray(stacked)}, state0, params)
    flat = stacked.reshape(3, -1)
    combined, _, conflicts, cosine = ref_pcgrad(flat, step_orders(state0, 3))
    assert int(state.num_conflicts) == conflicts > 0
    np.testing.assert_allclose(np.asarray(state.cosine), cosine, atol=1e-5)
    err = np.linalg.norm(np.asarray(out["w"], np.float64).ravel() - combined) / np.linalg.norm(combined)
    assert err < 1e-5, err


def test_state_shapes_and_dtypes():
    tx = pcgrad(4)
    state = tx.init(zeros_params())
    assert isinstance(state, PCGradState)
    chex.assert_shape(state.cosine, (4, 4))
    chex.assert_type(state.cosine, jnp.float32)
    chex.assert_shape(state.num_conflicts, ())
    chex.assert_type(state.num_conflicts, jnp.int32)
    _, new_state = run_step(tx, random_tree(np.random.default_rng(10), 4))
    chex.assert_trees_all_equal_shapes_and_dtypes(state, new_state)


def test_validation_errors():
    with pytest.raises(ValueError, match="num_tasks"):
        pcgrad(0)
    with pytest.raises(ValueError, match="reduction"):
        pcgrad(2, reduction="max")
    tx = pcgrad(3)
    state = tx.init(zeros_params())
    with pytest.raises(ValueError, match="leading task axis of size 3"):
        jax.jit(tx.update)(random_tree(np.random.default_rng(0), 2), state)
    with pytest.raises(ValueError, match="mask"):
        pcgrad(3, mask={"a": True}).update({"a": jnp.ones((3, 2)), "b": jnp.ones((3,))}, state)


# --------------------------------------------------------------------------------------------------
# 6. Inside an optax chain.
# --------------------------------------------------------------------------------------------------


def test_optax_chain_with_stacked_grads():
    num_tasks = 3
    rng = np.random.default_rng(11)
    params = jax.tree.map(
        lambda s: jnp.asarray(rng.normal(size=s).astype(np.float32)),
        SHAPES,
        is_leaf=lambda x: isinstance(x, tuple),
    )
    tx = optax.chain(pcgrad(num_tasks=num_tasks), optax.clip_by_global_norm(1.0), optax.adamw(1e-3))
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, grads):
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), updates, opt_state

    for _ in range(2):
        grads = random_tree(rng, num_tasks)
        new_params, updates, opt_state = step(params, opt_state, grads)
        chex.assert_trees_all_equal_shapes_and_dtypes(updates, params)
        chex.assert_trees_all_equal_shapes_and_dtypes(new_params, params)
        params = new_params

    pc_state = find_pcgrad_state(opt_state)
    assert isinstance(pc_state, PCGradState)
    diag = pcgrad_diagnostics(opt_state)
    chex.assert_shape(diag["cosine"], (num_tasks, num_tasks))
    assert diag["num_conflicts"] is pc_state.num_conflicts
    assert find_pcgrad_state(optax.adamw(1e-3).init(params)) is None
