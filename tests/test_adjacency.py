"""Token Recycling's adjacency table: the hand-worked update after one forward."""

import math

import mlx.core as mx
import numpy as np

from mlx_specdec.drafters.adjacency import AdjacencyTable


def test_update_after_one_forward_by_hand():
    table = AdjacencyTable(5, k=2)
    table.update([3, 1], mx.array([[0.0, 2, 1, 0, 0], [4.0, 0, 0, 0, 3]]))
    z3 = math.e**2 + math.e + 3
    z1 = math.e**4 + math.e**3 + 3
    assert table.tokens[3].tolist() == [1, 2] and table.tokens[1].tolist() == [0, 4]
    np.testing.assert_allclose(table.probs[3], [math.e**2 / z3, math.e / z3], rtol=1e-5)
    np.testing.assert_allclose(table.probs[1], [math.e**4 / z1, math.e**3 / z1], rtol=1e-5)
    np.testing.assert_allclose(table.probs[3], [0.5638, 0.2074], atol=1e-4)
    assert (table.tokens[[0, 2, 4]] == -1).all()  # never processed
    ids, probs = table.row(2)
    assert len(ids) == 0 and len(probs) == 0


def test_accepted_path_row_wins_and_rows_are_replaced():
    table = AdjacencyTable(5, k=2)
    logits = mx.array([[0.0, 0, 5, 4, 0], [0.0, 0, 0, 0, 0], [9.0, 8, 0, 0, 0]])
    table.update([3, 1, 3], logits, path=[0, 1])  # token 3 at node 0 (accepted) and node 2 (rejected)
    assert table.tokens[3].tolist() == [2, 3]
    table.update([3, 1, 3], logits)  # no path: the last occurrence wins
    assert table.tokens[3].tolist() == [0, 1]
    table.update([3], mx.array([[0.0, 0, 0, 7, 6]]))
    assert table.tokens[3].tolist() == [3, 4]  # refreshed from the newest forward


def test_memory_for_both_vocabularies():
    assert AdjacencyTable(49152).nbytes == 49152 * 8 * 8  # 3.1 MB
    assert AdjacencyTable(151936).nbytes == 151936 * 8 * 8  # 9.7 MB


def test_device_and_host_top_k_agree():
    from mlx_specdec.drafters.adjacency import top_k_rows, top_k_rows_host

    logits = mx.random.normal((4, 300), key=mx.random.key(0)) * 3
    ids, probs = top_k_rows(logits, 8)
    host_ids, host_probs = top_k_rows_host(np.array(logits), 8)
    assert np.array(ids).tolist() == host_ids.tolist()
    np.testing.assert_allclose(np.array(probs), host_probs, rtol=1e-5)
