"""The byte-bounded LRU (milkit/view/cache.py)."""

import threading

import numpy as np
import pytest

from milkit.view.cache import ByteLRU, default_size


def test_keeps_at_most_its_budget_dropping_the_least_recently_used():
    c: ByteLRU[bytes] = ByteLRU(10)
    c.put("a", b"1234")
    c.put("b", b"1234")
    assert c.get("a") == b"1234"                  # a is now the most recent
    c.put("c", b"1234")                           # 12 bytes > 10: b goes
    assert "b" not in c and "a" in c and "c" in c and c.bytes == 8


def test_a_value_larger_than_the_budget_is_returned_not_kept():
    c: ByteLRU[bytes] = ByteLRU(3)
    assert c.get_or_compute("x", lambda: b"toolong") == b"toolong"
    assert len(c) == 0 and c.bytes == 0


def test_get_or_compute_computes_once_and_counts():
    c: ByteLRU[bytes] = ByteLRU(100)
    calls = []
    for _ in range(3):
        c.get_or_compute("k", lambda: calls.append(1) or b"v")
    assert calls == [1] and c.hits == 2 and c.misses == 1


def test_replacing_a_key_updates_the_byte_count():
    c: ByteLRU[bytes] = ByteLRU(100)
    c.put("k", b"x" * 40)
    c.put("k", b"x" * 10)
    assert c.bytes == 10 and len(c) == 1


def test_sizes_of_arrays_and_bytes():
    assert default_size(np.zeros((4, 4), np.float64)) == 128
    assert default_size(b"abc") == 3 and default_size(object()) == 1
    with pytest.raises(ValueError):
        ByteLRU(-1)


def test_stays_bounded_under_threads():
    c: ByteLRU[bytes] = ByteLRU(1000)

    def work(t):
        for i in range(300):
            c.get_or_compute((t, i % 50), lambda: bytes(37))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert c.bytes <= 1000 and c.bytes == 37 * len(c)
