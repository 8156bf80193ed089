"""The in-memory store's bookkeeping for millions of keys (testkit/memory.py): keys
loaded unsorted, and removals that leave their place in the sorted keys until a
compaction. Listings must show exactly the keys stored, in order, once each."""

from __future__ import annotations

import asyncio
import random

from testkit.memory import MemoryStore


def listed(store: MemoryStore, prefix: str) -> list[str]:
    """Every key below ``prefix``, as a walk of it lists them (full keys)."""

    async def walk() -> list[str]:
        return [f"{prefix}/{f.key}" async for page in store.walk(prefix) for f in page]

    return asyncio.run(walk())


def children(store: MemoryStore, prefix: str) -> list[str]:
    """The names a listing of folder ``prefix`` shows."""

    async def names() -> list[str]:
        return [e.name async for page in store.list_children(prefix) for e in page]

    return asyncio.run(names())


def test_listings_show_what_is_stored_after_removals_puts_and_compactions() -> None:
    rng = random.Random(7)
    store = MemoryStore()
    other = store.reopen()  # shares the objects and the sorted keys
    keys = [f"k/{rng.randrange(5000):05d}/data" for _ in range(4000)]
    for key in keys[:2000]:
        store.put_unsorted(key, key.encode(), mtime=1.0)
    store.sort_keys()
    for step in range(6000):  # enough removals for several compactions
        key = rng.choice(keys)
        if rng.random() < 0.6:
            store.remove(key)
        else:
            store.put(key, b"x")
        if step % 1500 == 0:
            assert listed(store, "k") == sorted(store.objects)
    assert listed(store, "k") == sorted(store.objects)
    assert listed(other, "k") == sorted(store.objects)
    assert children(store, "k") == sorted({key.split("/")[1] for key in store.objects})
    assert len(store._sorted) == len(set(store._sorted))


def test_a_removed_key_put_again_is_listed_once() -> None:
    store = MemoryStore()
    store.put("a/1", b"1")
    store.put("a/2", b"2")
    store.remove("a/1")
    assert listed(store, "a") == ["a/2"]
    store.put("a/1", b"again")
    assert listed(store, "a") == ["a/1", "a/2"]
    store.put("b/c/d", b"1")
    store.put("b/c0", b"2")
    store.put("b/c/e", b"3")
    store.remove("b/c/d")
    assert children(store, "b") == ["c", "c0"]
    store.remove("b/c/e")
    assert children(store, "b") == ["c0"]  # a folder whose keys were all removed is gone
