"""KV cache: append, keep (one gather), trim, growth past a chunk."""

import mlx.core as mx
import numpy as np
import pytest

from mlx_specdec.cache import KVCache


def _kv(values, n_kv=2, hd=3):
    """KV of shape (1, n_kv, L, hd) whose every entry for token t equals values[t]."""
    v = mx.array(np.asarray(values, dtype=np.float32))[None, None, :, None]
    return mx.broadcast_to(v, (1, n_kv, len(values), hd))


def _contents(cache, layer=0):
    return np.array(cache.keys[layer][0, 0, : cache.offset, 0]).tolist()


def _append(cache, values):
    for layer in range(len(cache.keys)):
        cache.update(layer, _kv(values), _kv(values))
    cache.advance(len(values))


def test_update_returns_everything_so_far():
    cache = KVCache(2)
    _append(cache, [1, 2, 3])
    k, v = cache.update(0, _kv([4, 5]), _kv([4, 5]))
    assert np.array(k[0, 0, :, 0]).tolist() == [1, 2, 3, 4, 5]
    cache.update(1, _kv([4, 5]), _kv([4, 5]))
    cache.advance(2)
    assert cache.offset == 5 and _contents(cache, 1) == [1, 2, 3, 4, 5]


def test_keep_compacts_accepted_nodes():
    cache = KVCache(2)
    _append(cache, [10, 11, 12, 13, 14])
    _append(cache, [20, 21, 22, 23])  # a 4-node tree at slots 5..8
    cache.keep(5, [0, 2, 3])
    assert cache.offset == 8
    for layer in range(2):
        assert _contents(cache, layer) == [10, 11, 12, 13, 14, 20, 22, 23]
        assert np.array(cache.values[layer][0, 1, :8, 2]).tolist() == [10, 11, 12, 13, 14, 20, 22, 23]


def test_keep_contiguous_prefix_is_pointer_move():
    cache = KVCache(1)
    _append(cache, [1, 2, 3, 4, 5])
    before = cache.keys[0]
    cache.keep(2, [0, 1])
    assert cache.offset == 4 and cache.keys[0] is before and _contents(cache) == [1, 2, 3, 4]


def test_keep_rejects_bad_indices():
    cache = KVCache(1)
    _append(cache, [1, 2, 3])
    with pytest.raises(ValueError):
        cache.keep(0, [2, 1])
    with pytest.raises(ValueError):
        cache.keep(1, [0, 5])


def test_trim_and_reappend_overwrites():
    cache = KVCache(1)
    _append(cache, [1, 2, 3, 4])
    assert cache.trim(2) == 2 and cache.offset == 2
    assert cache.trim(10) == 2 and cache.offset == 0
    _append(cache, [7, 8])
    assert _contents(cache) == [7, 8]


def test_grows_past_a_chunk_keeping_contents():
    cache = KVCache(1)
    _append(cache, list(range(250)))
    _append(cache, list(range(250, 300)))
    assert cache.capacity >= 300 and _contents(cache) == list(range(300))
    cache.keep(260, [0, 5, 39])
    assert _contents(cache)[-4:] == [259, 260, 265, 299]
