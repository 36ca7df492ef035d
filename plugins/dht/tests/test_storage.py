"""Tests of the DHT's local storage: classification, records, quotas, rate, totals, expiry.

The store is pure, so every test passes its own clocks: ``now`` (monotonic seconds) and
``now_ms`` (Unix milliseconds). Identities come from fixed seeds with cheap proofs of work.
"""

from __future__ import annotations

import functools

import blake3
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from korium_dht.config import MAX_VALUE_SIZE, DhtConfig
from korium_dht.errors import (
    InvalidValueError,
    QuotaExceededError,
    RateLimitedError,
    RecordRefusedError,
    StorageFullError,
    StoreRefusedError,
    ValueTooLargeError,
)
from korium_dht.storage import Kind, Store, StoredItem, value_key

from korium.errors import ConfigError
from korium.identity import Contact, Identity, Keypair, NodeIdentity, solve_pow

DIFFICULTY = 8
NOW_MS = 1_700_000_000_000
DAY_S = 24 * 3600.0
ADDRS = ["10.0.0.1:4433"]
MiB = 1024 * 1024


@functools.cache
def node(seed: int, difficulty: int = DIFFICULTY) -> NodeIdentity:
    """A fixed identity (seeded, so runs are reproducible) with a proof at *difficulty*."""
    keypair = Keypair.from_seed(bytes([seed]) * 32)
    return NodeIdentity(keypair, solve_pow(keypair.identity, difficulty, workers=1))


def peer(seed: int) -> Identity:
    """A storing peer (its proof does not matter to the store)."""
    return Keypair.from_seed(bytes([200, seed]) * 16).identity


LOCAL = node(1)
A, B, C = node(2), node(3), node(4)
P, Q, R = peer(1), peer(2), peer(3)


def make_store(max_record_age_s: float = DAY_S, **settings: object) -> Store:
    return Store(
        DhtConfig.from_settings(settings),
        LOCAL.identity,
        difficulty=DIFFICULTY,
        max_record_age_s=max_record_age_s,
    )


def record(who: NodeIdentity, ts: int = NOW_MS, addrs: list[str] = ADDRS) -> bytes:
    return who.contact(addrs, timestamp_ms=ts).encode()


def put_value(store: Store, value: bytes, by: Identity, now: float = 0.0) -> Kind:
    return store.put(value_key(value), value, by, now, NOW_MS)


def put_record(
    store: Store, data: bytes, who: NodeIdentity, by: Identity, now: float = 0.0
) -> Kind:
    return store.put(bytes(who.identity), data, by, now, NOW_MS + int(now * 1000))


def values(count: int, size: int = 10, tag: bytes = b"v") -> list[bytes]:
    return [tag + i.to_bytes(4, "big") + bytes(size) for i in range(count)]


# -- construction and classification -----------------------------------------------------


def test_value_key_is_the_32_byte_blake3_digest() -> None:
    assert value_key(b"hello") == blake3.blake3(b"hello").digest()
    assert len(value_key(b"")) == 32


def test_constructor_refuses_bad_difficulty_and_age() -> None:
    with pytest.raises(ConfigError):
        Store(DhtConfig(), LOCAL.identity, difficulty=65, max_record_age_s=DAY_S)
    with pytest.raises(ConfigError):
        Store(DhtConfig(), LOCAL.identity, difficulty=8, max_record_age_s=0)


def test_classify_does_not_store() -> None:
    store = make_store()
    assert store.classify(value_key(b"x"), b"x", NOW_MS) is Kind.VALUE
    assert store.classify(bytes(A.identity), record(A), NOW_MS) is Kind.RECORD
    assert len(store) == 0
    assert store.stats()["refused"] == 0


def test_size_is_checked_before_anything_else() -> None:
    store = make_store()
    # A wrong key would be "invalid", but the size refusal comes first.
    with pytest.raises(ValueTooLargeError) as info:
        store.classify(bytes(32), bytes(MAX_VALUE_SIZE + 1), NOW_MS)
    assert info.value.reason == "too-large"


# -- content-addressed values ------------------------------------------------------------


def test_content_addressed_store_and_get() -> None:
    store = make_store()
    value = b"some bytes"
    key = value_key(value)
    assert store.put(key, value, P, 0.0, NOW_MS) is Kind.VALUE
    assert store.get(key, 1.0) == value
    assert key in store
    assert "not bytes" not in store
    assert len(store) == 1
    assert store.usage(P) == (10, 1)
    assert store.stats() == {
        "entries": 1,
        "bytes": 10,
        "records": 0,
        "values": 1,
        "peers": 1,
        "refused": 0,
        "expired": 0,
    }
    assert store.get(value_key(b"absent"), 1.0) is None


def test_empty_value_is_a_value() -> None:
    store = make_store()
    assert put_value(store, b"", P) is Kind.VALUE
    assert store.get(value_key(b""), 0.0) == b""
    assert store.usage(P) == (0, 1)


def test_wrong_hash_refused() -> None:
    store = make_store()
    with pytest.raises(InvalidValueError) as info:
        store.put(value_key(b"other"), b"value", P, 0.0, NOW_MS)
    assert info.value.reason == "invalid"
    assert len(store) == 0
    assert store.usage(P) == (0, 0)
    assert store.stats()["refused"] == 1


def test_key_of_wrong_length_refused() -> None:
    store = make_store()
    with pytest.raises(InvalidValueError) as info:
        store.put(value_key(b"v")[:31], b"v", P, 0.0, NOW_MS)
    assert info.value.reason == "invalid"


def test_max_value_size_accepted_and_one_more_refused() -> None:
    store = make_store()
    big = bytes(MAX_VALUE_SIZE)
    assert MiB == MAX_VALUE_SIZE
    assert put_value(store, big, P) is Kind.VALUE
    assert store.usage(P) == (MiB, 1)
    too_big = bytes(MAX_VALUE_SIZE + 1)
    with pytest.raises(ValueTooLargeError) as info:
        put_value(store, too_big, Q)
    assert info.value.reason == "too-large"
    assert len(store) == 1
    assert store.usage(Q) == (0, 0)


def test_same_value_again_refreshes_without_second_charge() -> None:
    store = make_store()
    value = b"republished"
    put_value(store, value, P, now=0.0)
    put_value(store, value, P, now=100.0)
    put_value(store, value, Q, now=200.0)
    assert store.usage(P) == (11, 1)
    assert store.usage(Q) == (0, 0)
    assert store.stats()["bytes"] == 11
    # Expiry follows the latest store.
    assert store.get(value_key(value), 200.0 + DAY_S - 1) == value
    assert store.get(value_key(value), 200.0 + DAY_S) is None


# -- records ------------------------------------------------------------------------------


def test_valid_record_accepted() -> None:
    store = make_store()
    data = record(A)
    assert put_record(store, data, A, P) is Kind.RECORD
    assert store.get(bytes(A.identity), 0.0) == data
    stored = store.record(A.identity, 0.0)
    assert stored is not None
    assert stored.timestamp_ms == NOW_MS
    assert stored.addresses == tuple(ADDRS)
    assert store.record(B.identity, 0.0) is None
    assert store.stats()["records"] == 1
    assert store.stats()["values"] == 0


def test_newer_record_replaces_and_recharges() -> None:
    store = make_store()
    old, new = record(A, NOW_MS - 2000), record(A, NOW_MS, ["10.0.0.2:4433", "10.0.0.3:4433"])
    put_record(store, old, A, P)
    assert store.usage(P) == (len(old), 1)
    assert put_record(store, new, A, Q) is Kind.RECORD
    stored = store.record(A.identity, 0.0)
    assert stored is not None
    assert stored.timestamp_ms == NOW_MS
    assert store.usage(P) == (0, 0)
    assert store.usage(Q) == (len(new), 1)
    assert store.stats()["entries"] == 1
    assert store.stats()["bytes"] == len(new)
    assert store.stats()["peers"] == 1


def test_same_storer_replacing_its_record_is_charged_the_difference() -> None:
    store = make_store()
    old, new = record(A, NOW_MS - 1), record(A, NOW_MS, ["10.0.0.1:4433", "10.9.9.9:1"])
    put_record(store, old, A, P)
    put_record(store, new, A, P)
    assert len(new) != len(old)
    assert store.usage(P) == (len(new), 1)


def test_replacing_another_peers_record_is_charged_in_full() -> None:
    old, new = record(A, NOW_MS - 1), record(A, NOW_MS)
    store = make_store(per_peer_bytes=200 + len(new) - 1)
    put_record(store, old, A, P)
    put_value(store, bytes(200), Q)
    # P's release does not count toward Q's quota: Q would hold 200 + len(new) bytes.
    with pytest.raises(QuotaExceededError) as info:
        put_record(store, new, A, Q)
    assert info.value.reason == "quota-bytes"
    assert store.usage(P) == (len(old), 1)
    assert store.usage(Q) == (200, 1)


def test_older_record_refused() -> None:
    store = make_store()
    put_record(store, record(A, NOW_MS), A, P)
    with pytest.raises(RecordRefusedError) as info:
        put_record(store, record(A, NOW_MS - 1000), A, Q)
    assert info.value.reason == "older"
    # Same timestamp, different content: also refused (the first one stays).
    with pytest.raises(RecordRefusedError) as info:
        put_record(store, record(A, NOW_MS, ["10.0.0.9:1"]), A, Q)
    assert info.value.reason == "older"
    stored = store.record(A.identity, 0.0)
    assert stored is not None
    assert stored.addresses == tuple(ADDRS)
    assert store.usage(Q) == (0, 0)
    assert store.stats()["refused"] == 2


def test_identical_record_refreshes_expiry() -> None:
    store = make_store(ttl_s=3600.0, republish_s=600.0)
    data = record(A)
    put_record(store, data, A, P, now=0.0)
    assert put_record(store, data, A, Q, now=1000.0) is Kind.RECORD
    assert store.usage(P) == (len(data), 1)
    assert store.usage(Q) == (0, 0)
    assert store.get(bytes(A.identity), 4599.0) == data
    assert store.get(bytes(A.identity), 4600.0) is None


def test_record_expires_when_it_goes_stale() -> None:
    store = make_store(max_record_age_s=600.0)
    put_record(store, record(A, NOW_MS - 100_000), A, P, now=0.0)  # 100 s old at store time
    assert store.record(A.identity, 499.0) is not None
    assert store.record(A.identity, 500.0) is None
    assert len(store) == 0


def test_an_expired_record_no_longer_blocks_an_older_one() -> None:
    store = make_store(ttl_s=3600.0, republish_s=600.0)
    put_record(store, record(A, NOW_MS), A, P, now=0.0)
    older = record(A, NOW_MS - 1)
    assert store.put(bytes(A.identity), older, A.identity, 3600.0, NOW_MS) is Kind.RECORD
    assert store.usage(P) == (0, 0)


def test_record_for_another_key_refused() -> None:
    store = make_store()
    for key in (bytes(B.identity), value_key(b"x"), bytes(32)):
        with pytest.raises(RecordRefusedError) as info:
            store.put(key, record(A), P, 0.0, NOW_MS)
        assert info.value.reason == "wrong-key"
    assert len(store) == 0


def test_stale_record_refused() -> None:
    store = make_store(max_record_age_s=3600.0)
    with pytest.raises(RecordRefusedError) as info:
        put_record(store, record(A, NOW_MS - 3_601_000), A, P)
    assert info.value.reason == "stale"
    assert put_record(store, record(A, NOW_MS - 3_599_000), A, P) is Kind.RECORD


def test_future_record_refused_beyond_five_seconds() -> None:
    store = make_store()
    with pytest.raises(RecordRefusedError) as info:
        put_record(store, record(A, NOW_MS + 5001), A, P)
    assert info.value.reason == "future"
    assert len(store) == 0
    assert put_record(store, record(A, NOW_MS + 5000), A, P) is Kind.RECORD


def test_bad_signature_refused() -> None:
    store = make_store()
    contact = A.contact(ADDRS, timestamp_ms=NOW_MS)
    flipped = bytes([contact.signature[0] ^ 1]) + contact.signature[1:]
    forged = msgspec.structs.replace(contact, signature=flipped).encode()
    with pytest.raises(RecordRefusedError) as info:
        put_record(store, forged, A, P)
    assert info.value.reason == "signature"
    altered = msgspec.structs.replace(contact, addresses=("10.6.6.6:1",)).encode()
    with pytest.raises(RecordRefusedError) as info:
        put_record(store, altered, A, P)
    assert info.value.reason == "signature"
    assert len(store) == 0


def test_weak_proof_refused() -> None:
    weak = node(9, difficulty=4)
    store = Store(DhtConfig(), LOCAL.identity, difficulty=weak.strength + 1, max_record_age_s=DAY_S)
    with pytest.raises(RecordRefusedError) as info:
        put_record(store, record(weak), weak, P)
    assert info.value.reason == "proof"
    assert len(store) == 0


@pytest.mark.parametrize(
    "garbage",
    [
        b"not a record at all",
        b"\xc1",
        msgspec.msgpack.encode([1, 2, 3]),
        msgspec.msgpack.encode({"identity": "x"}),
        bytes(9000),  # larger than any record can be
    ],
)
def test_garbage_refused_as_invalid(garbage: bytes) -> None:
    store = make_store()
    with pytest.raises(InvalidValueError) as info:
        store.put(bytes(A.identity), garbage, P, 0.0, NOW_MS)
    assert info.value.reason == "invalid"
    assert len(store) == 0


def test_truncated_record_refused_as_invalid() -> None:
    store = make_store()
    with pytest.raises(InvalidValueError) as info:
        put_record(store, record(A)[:-1], A, P)
    assert info.value.reason == "invalid"


# -- quotas, rate, totals -----------------------------------------------------------------


def test_entry_quota_per_peer() -> None:
    store = make_store(stores_per_peer=1000)
    for value in values(100):
        put_value(store, value, P)
    assert store.usage(P) == (100 * 15, 100)
    extra = b"one too many"
    with pytest.raises(QuotaExceededError) as info:
        put_value(store, extra, P)
    assert info.value.reason == "quota-entries"
    assert store.usage(P) == (1500, 100)
    assert len(store) == 100
    assert store.get(value_key(extra), 0.0) is None
    assert put_value(store, extra, Q) is Kind.VALUE
    assert len(store) == 101


def test_replacing_own_record_at_entry_quota_is_allowed() -> None:
    store = make_store(per_peer_entries=1)
    put_record(store, record(A, NOW_MS - 1), A, P)
    assert put_record(store, record(A, NOW_MS), A, P) is Kind.RECORD
    assert store.usage(P) == (len(record(A)), 1)
    with pytest.raises(QuotaExceededError) as info:
        put_value(store, b"second entry", P)
    assert info.value.reason == "quota-entries"


def test_byte_quota_per_peer() -> None:
    store = make_store()
    first, second = bytes(600_000), b"\x01" * 600_000
    put_value(store, first, P)
    with pytest.raises(QuotaExceededError) as info:
        put_value(store, second, P)
    assert info.value.reason == "quota-bytes"
    assert store.usage(P) == (600_000, 1)
    assert store.get(value_key(second), 0.0) is None
    assert put_value(store, second, Q) is Kind.VALUE
    assert store.usage(Q) == (600_000, 1)
    assert store.stats()["bytes"] == 1_200_000


def test_rate_limit_per_peer() -> None:
    store = make_store(stores_per_peer=20, store_window_s=60.0)
    batch = values(21)
    for value in batch[:20]:
        put_value(store, value, P, now=10.0)
    with pytest.raises(RateLimitedError) as info:
        put_value(store, batch[20], P, now=10.0)
    assert info.value.reason == "rate"
    assert len(store) == 20
    assert store.usage(P) == (300, 20)
    # Another peer is not affected, and the peer may store again after the window.
    assert put_value(store, batch[20], Q, now=10.0) is Kind.VALUE
    assert put_value(store, b"later", P, now=70.0) is Kind.VALUE
    assert store.usage(P) == (305, 21)


def test_total_entries_cap_refuses_instead_of_evicting() -> None:
    store = make_store(max_entries=3)
    put_value(store, b"one", P)
    put_value(store, b"two", Q)
    put_value(store, b"three", R)
    for storer in (peer(4), LOCAL.identity):
        with pytest.raises(StorageFullError) as info:
            put_value(store, b"four", storer)
        assert info.value.reason == "full"
    assert len(store) == 3
    assert [store.get(value_key(v), 0.0) for v in (b"one", b"two", b"three")] == [
        b"one",
        b"two",
        b"three",
    ]


def test_total_bytes_cap() -> None:
    store = make_store(max_total_bytes=1000)
    put_value(store, bytes(600), P)
    with pytest.raises(StorageFullError) as info:
        put_value(store, b"\x01" * 401, Q)
    assert info.value.reason == "full"
    assert put_value(store, b"\x01" * 400, Q) is Kind.VALUE
    assert store.stats()["bytes"] == 1000


def test_replacement_fits_in_a_full_store() -> None:
    store = make_store(max_entries=1)
    put_record(store, record(A, NOW_MS - 1), A, P)
    assert put_record(store, record(A, NOW_MS), A, Q) is Kind.RECORD
    assert store.stats()["entries"] == 1


def test_local_node_is_exempt_from_rate_and_quota_but_not_totals() -> None:
    store = make_store()
    me = LOCAL.identity
    for value in values(150):
        put_value(store, value, me)  # 150 > 100 entries and > 20 per minute
    put_value(store, bytes(600_000), me)
    put_value(store, b"\x01" * 600_000, me)
    assert store.usage(me) == (150 * 15 + 1_200_000, 152)
    assert len(store) == 152

    small = make_store(max_entries=2)
    put_value(small, b"a", me)
    put_value(small, b"b", me)
    with pytest.raises(StorageFullError):
        put_value(small, b"c", me)


# -- expiry -------------------------------------------------------------------------------


def test_ttl_expiry_on_get() -> None:
    store = make_store()
    put_value(store, b"short-lived", P, now=5.0)
    assert store.get(value_key(b"short-lived"), 5.0 + DAY_S - 0.5) == b"short-lived"
    assert store.get(value_key(b"short-lived"), 5.0 + DAY_S) is None
    assert len(store) == 0
    assert store.usage(P) == (0, 0)
    assert store.stats()["expired"] == 1
    assert store.stats()["peers"] == 0


def test_expire_removes_every_expired_item_and_counts() -> None:
    store = make_store()
    for value in values(3):
        put_value(store, value, P, now=0.0)
    for value in values(2, tag=b"w"):
        put_value(store, value, Q, now=100.0)
    put_record(store, record(A), A, R, now=0.0)
    assert store.expire(DAY_S - 1) == 0
    assert store.expire(DAY_S) == 4
    assert len(store) == 2
    assert store.usage(P) == (0, 0)
    assert store.record(A.identity, DAY_S) is None
    assert store.expire(DAY_S) == 0
    assert store.expire(DAY_S + 100) == 2
    assert len(store) == 0
    assert store.stats() == {
        "entries": 0,
        "bytes": 0,
        "records": 0,
        "values": 0,
        "peers": 0,
        "refused": 0,
        "expired": 6,
    }


def test_refreshed_item_survives_its_first_expiry() -> None:
    store = make_store()
    put_value(store, b"kept", P, now=0.0)
    put_value(store, b"kept", P, now=50.0)
    assert store.expire(DAY_S) == 0
    assert store.expire(DAY_S + 50) == 1


def test_expiry_bookkeeping_stays_bounded_under_refreshes() -> None:
    store = make_store()
    for i in range(2000):
        put_value(store, b"refreshed", LOCAL.identity, now=float(i))
    assert len(store) == 1
    assert len(store._heap) <= 2 * len(store) + 64
    assert store.expire(1999 + DAY_S) == 1


def test_stored_item_fields() -> None:
    item = StoredItem(b"k", b"v", Kind.VALUE, P, 1.0, 1)
    assert (item.kind.value, item.size, item.expires_at) == ("value", 1, 1.0)
    assert [k.value for k in Kind] == ["value", "record"]


# -- properties ---------------------------------------------------------------------------


def snapshot(store: Store, keys: list[bytes], now: float) -> object:
    """Everything observable about *store* at *now*, except the cumulative counters."""
    stats = store.stats()
    del stats["refused"]
    return (
        stats,
        [store.usage(p) for p in (P, Q, R, LOCAL.identity)],
        [store.get(k, now) for k in keys],
    )


PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPS
@given(
    key=st.one_of(st.binary(max_size=40), st.binary(min_size=32, max_size=32)),
    value=st.binary(max_size=400),
)
def test_random_bytes_are_refused_cleanly(key: bytes, value: bytes) -> None:
    store = make_store()
    put_value(store, b"existing", P)
    put_record(store, record(A), A, Q)
    keys = [key, value_key(b"existing"), bytes(A.identity)]
    before = snapshot(store, keys, 0.0)
    try:
        kind = store.put(key, value, P, 0.0, NOW_MS)
    except StoreRefusedError:
        assert snapshot(store, keys, 0.0) == before
        assert store.stats()["refused"] == 1
    else:
        assert kind is Kind.VALUE
        assert key == value_key(value)


@PROPS
@given(value=st.binary(max_size=400))
def test_random_bytes_at_their_own_hash_are_stored(value: bytes) -> None:
    store = make_store()
    assert put_value(store, value, P) is Kind.VALUE
    assert store.usage(P) == (len(value), 1)


_RECORD = record(A)


@PROPS
@given(
    edits=st.lists(
        st.tuples(st.integers(0, len(_RECORD) - 1), st.integers(0, 255)), min_size=1, max_size=4
    ),
    cut=st.integers(0, len(_RECORD)),
)
def test_mutated_records_never_store_anything_else(edits: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(_RECORD)
    for index, byte in edits:
        data[index] = byte
    mutated = bytes(data[:cut])
    store = make_store()
    key = bytes(A.identity)
    try:
        kind = store.put(key, mutated, P, 0.0, NOW_MS)
    except StoreRefusedError:
        assert len(store) == 0
        assert store.usage(P) == (0, 0)
    else:
        # Only an edit that changes nothing the signature covers can be accepted.
        assert kind is Kind.RECORD
        assert store.record(A.identity, 0.0) == Contact.decode(_RECORD)


# A small store, so that quotas, rate, totals and expiry all trigger in short sequences.
SMALL = {
    "per_peer_entries": 3,
    "per_peer_bytes": 600,
    "stores_per_peer": 5,
    "store_window_s": 10.0,
    "max_entries": 6,
    "max_total_bytes": 1500,
    "ttl_s": 30.0,
    "republish_s": 10.0,
}
STORERS = (P, Q, R, LOCAL.identity)
RECORDS = [(who, ts, record(who, NOW_MS + ts)) for who in (A, B) for ts in (-2000, 0, 2000)]

op = st.tuples(
    st.integers(0, len(STORERS) - 1),  # who stores
    st.one_of(st.just(0.0), st.floats(0.0, 8.0)),  # time step: often none, so the rate trips
    st.one_of(
        st.tuples(st.just("value"), st.binary(max_size=350)),
        st.tuples(st.just("record"), st.integers(0, len(RECORDS) - 1)),
        st.tuples(st.just("garbage"), st.binary(max_size=50)),
    ),
)


@PROPS
@given(ops=st.lists(op, max_size=25))
def test_store_sequences_keep_accounting_consistent(
    ops: list[tuple[int, float, tuple[str, object]]],
) -> None:
    store = make_store(**SMALL)
    now = 0.0
    keys: list[bytes] = []
    refused = 0
    for who_index, step, (what, arg) in ops:
        now += step
        store.expire(now)
        who = STORERS[who_index]
        owner, ts = A, 0
        if what == "record":
            assert isinstance(arg, int)
            owner, ts, data = RECORDS[arg]
            key = bytes(owner.identity)
        else:
            assert isinstance(arg, bytes)
            data = arg
            key = value_key(data) if what == "value" else bytes(32)
        keys.append(key)
        before = snapshot(store, keys, now)
        previous = store.record(owner.identity, now) if what == "record" else None
        try:
            kind = store.put(key, data, who, now, NOW_MS)
        except StoreRefusedError as exc:
            refused += 1
            assert snapshot(store, keys, now) == before
            if exc.reason == "older":
                assert previous is not None
                assert previous.timestamp_ms >= NOW_MS + ts
        else:
            assert store.get(key, now) is not None
            if kind is Kind.RECORD:
                stored = store.record(owner.identity, now)
                assert stored is not None
                assert stored.timestamp_ms == NOW_MS + ts
            assert what != "garbage"
        # Accounting: charges add up to the totals, no empty rows, caps hold.
        stats = store.stats()
        usages = [store.usage(p) for p in STORERS]
        assert sum(u[0] for u in usages) == stats["bytes"]
        assert sum(u[1] for u in usages) == stats["entries"] == len(store)
        assert stats["peers"] == sum(1 for u in usages if u[1] > 0)
        assert stats["entries"] <= SMALL["max_entries"]
        assert stats["bytes"] <= SMALL["max_total_bytes"]
        for p, u in zip(STORERS[:3], usages[:3], strict=True):
            assert u[1] <= SMALL["per_peer_entries"], p
            assert u[0] <= SMALL["per_peer_bytes"], p
        assert stats["refused"] == refused
