"""FrameSplitter: successive length-prefixed frames cut out of arbitrarily chunked stream data."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from korium.rpc import frames
from korium.rpc.frames import LENGTH, FrameError, FrameSplitter

LIMIT = 1_000


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[i:j] for i, j in itertools.pairwise(points)]


@given(
    bodies=st.lists(st.binary(max_size=300), max_size=12),
    cuts=st.lists(st.integers(0, 10_000), max_size=40),
)
def test_any_chunking_yields_the_frames_in_order(bodies: list[bytes], cuts: list[int]) -> None:
    sent = [frames.encode_request("p", body) for body in bodies]
    splitter = FrameSplitter(LIMIT)
    got: list[bytes] = []
    for chunk in _chunks(b"".join(sent), cuts):
        got += splitter.feed(chunk)
    assert got == sent
    assert splitter.pending == 0
    splitter.finish()
    assert [frames.decode_request(frame).body for frame in got] == bodies


def test_each_frame_comes_out_as_soon_as_it_is_whole() -> None:
    one, two = frames.encode_request("p", b"one"), frames.encode_request("p", b"two")
    splitter = FrameSplitter(LIMIT)
    assert splitter.feed(one[:2]) == []  # half a length prefix
    assert splitter.pending == 2
    assert splitter.feed(one[2:-1]) == []
    assert splitter.feed(one[-1:] + two[:5]) == [one]
    assert splitter.pending == 5
    assert splitter.feed(two[5:]) == [two]
    assert splitter.pending == 0


def test_a_chunk_that_is_one_frame_is_not_copied() -> None:
    frame = frames.encode_request("p", b"x" * 100)
    assert FrameSplitter(LIMIT).feed(frame)[0] is frame


def test_a_frame_cut_short_by_the_end_of_the_stream() -> None:
    splitter = FrameSplitter(LIMIT)
    frame = frames.encode_request("p", b"body")
    assert splitter.feed(frame + frame[:-1]) == [frame]
    with pytest.raises(FrameError, match="cut short"):
        splitter.finish()
    short = FrameSplitter(LIMIT)
    short.feed(b"\x00\x00")
    with pytest.raises(FrameError, match="cut short"):
        short.finish()


def test_a_zero_length_frame_is_a_frame() -> None:
    # four bytes of prefix and nothing else: complete (the decoder calls it malformed)
    assert FrameSplitter(LIMIT).feed(LENGTH.pack(0)) == [LENGTH.pack(0)]


def test_an_oversize_prefix_is_refused_before_buffering() -> None:
    splitter = FrameSplitter(LIMIT)
    with pytest.raises(FrameError, match="frame of 1001 bytes exceeds the 1000-byte limit"):
        splitter.feed(LENGTH.pack(LIMIT + 1) + bytes(100))
    assert splitter.pending == 0
    with pytest.raises(FrameError, match="exceeds"):  # and the stream stays refused
        splitter.feed(frames.encode_request("p", b""))
    with pytest.raises(FrameError, match="exceeds"):
        splitter.finish()
    exact = FrameSplitter(LIMIT)
    assert exact.feed(LENGTH.pack(LIMIT) + bytes(LIMIT)) == [LENGTH.pack(LIMIT) + bytes(LIMIT)]


def test_an_oversize_prefix_split_across_chunks() -> None:
    splitter = FrameSplitter(LIMIT)
    prefix = LENGTH.pack(2**32 - 1)
    assert splitter.feed(prefix[:3]) == []
    with pytest.raises(FrameError, match="exceeds"):
        splitter.feed(prefix[3:] + bytes(10))
    assert splitter.pending == 0


def test_frames_before_an_oversize_one_are_delivered_first() -> None:
    one, two = frames.encode_request("p", b"one"), frames.encode_request("p", b"two")
    splitter = FrameSplitter(LIMIT)
    assert splitter.feed(one + two + LENGTH.pack(LIMIT + 1) + bytes(50)) == [one, two]
    assert splitter.pending == 0
    with pytest.raises(FrameError, match="exceeds"):
        splitter.feed(bytes(50))
    finishing = FrameSplitter(LIMIT)
    assert finishing.feed(one + LENGTH.pack(LIMIT + 1)) == [one]
    with pytest.raises(FrameError, match="exceeds"):
        finishing.finish()
