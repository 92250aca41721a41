"""The video pipeline's stages one by one (runtime/video_stages.py), without threads."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from daefr.runtime import video_stages as st
from daefr.runtime.clips import synthetic_frames, write_clip
from daefr.runtime.face.detector import Face

R = 16  # crop side of the fake restorer


class FakeRestorer:
    """Restores a face to its negative; its codes are the batch position, so calls can be told apart."""

    name, device, resolution = "fake", torch.device("cpu"), R

    def __init__(self) -> None:
        self.calls: list[int] = []

    def restore(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.calls.append(len(batch))
        codes = torch.arange(len(batch))[:, None].repeat(1, 4) + 100 * len(self.calls)
        return -batch, codes


def decoded(index: int, value: int = 0, w: int = 32, h: int = 24) -> st.DecodedFrame:
    frame = av.VideoFrame.from_ndarray(np.full((h, w, 3), value, np.uint8), format="rgb24")
    frame.pts, frame.time_base = index * 10, Fraction(1, 250)
    return st.DecodedFrame(index, frame)


def aligned_with(n_faces: int, index: int = 0) -> st.AlignedFrame:
    crops = np.full((n_faces, R, R, 3), 10 * (index + 1), np.uint8)
    rgb = np.zeros((24, 32, 3), np.uint8) if n_faces else None
    return st.AlignedFrame(decoded(index), rgb, [], [np.eye(2, 3)] * n_faces, crops)


def test_batch_policy_is_full_at_batch_size_faces_or_max_items():
    policy = st.BatchPolicy(batch_size=3, max_items=4)
    assert not policy.full(2, 3) and policy.full(3, 1) and policy.full(0, 4)
    assert policy.calls(7) == [slice(0, 3), slice(3, 6), slice(6, 9)] and policy.calls(0) == []


def test_groups_collect_consecutive_frames_until_the_policy_is_full():
    frames = [aligned_with(n, i) for i, n in enumerate([2, 0, 2, 1, 0, 0, 0, 0, 0])]
    got = [[f.decoded.index for f in g] for g in st.groups(frames, st.BatchPolicy(3, 4))]
    assert got == [[0, 1, 2], [3, 4, 5, 6], [7, 8]]  # 4 faces; 4 items; the rest


def test_restore_frames_calls_the_restorer_in_batches_and_hands_each_frame_its_faces():
    restorer, counter = FakeRestorer(), st.RestoreCounter()
    frames = [aligned_with(n, i) for i, n in enumerate([2, 0, 3])]
    out = st.restore_frames(frames, restorer, st.BatchPolicy(2, 8), counter)
    assert restorer.calls == [2, 2, 1] and counter.batches == 3
    assert all(r.aligned is f for r, f in zip(out, frames, strict=True))
    assert out[1].codes is None and out[1].crops.shape == (0, R, R, 3)
    assert [len(r.codes) for r in (out[0], out[2])] == [2, 3]
    # a negated crop of value v comes back as 255 - v; the aligned crops are left alone
    assert (out[0].crops == 255 - 10).all() and (out[2].crops == 255 - 30).all()
    assert (frames[0].crops == 10).all()
    # frame 2 holds faces 2..4 of 5: the second call (positions 0, 1) and the third (position 0)
    assert list(out[2].codes[:, 0]) == [200, 201, 300]


def test_restore_frames_without_any_face_calls_nothing():
    restorer = FakeRestorer()
    out = st.restore_frames([aligned_with(0), aligned_with(0, 1)], restorer, st.BatchPolicy(2, 8))
    assert restorer.calls == [] and all(r.codes is None for r in out)


def test_code_stability_extend_equals_one_pass_for_every_split():
    rng = np.random.default_rng(0)
    seq = [None if k == 0 else rng.integers(0, 3, (k, 6)) for k in rng.choice([0, 1, 1, 1, 2], 20)]
    whole = st.CodeStability()
    for codes in seq:
        whole.update(codes)
    assert whole.pairs > 3
    for cut in range(len(seq) + 1):
        a, b = st.CodeStability(), st.CodeStability()
        for codes in seq[:cut]:
            a.update(codes)
        for codes in seq[cut:]:
            b.update(codes)
        a.extend(b)
        assert (a.equal, a.compared, a.pairs, a.frames) == (
            whole.equal,
            whole.compared,
            whole.pairs,
            whole.frames,
        )


def test_align_without_faces_keeps_no_rgb_unless_rotated():
    d, rgb = decoded(0), np.zeros((24, 32, 3), np.uint8)
    plain = st.align(d, rgb, [], R, rotation_k=0)
    assert plain.n_faces == 0 and plain.crops.shape == (0, R, R, 3) and plain.rgb is None
    assert st.align(d, rgb, [], R, rotation_k=1).rgb is rgb


def test_align_warps_one_crop_per_face():
    face = Face(
        np.array([4, 4, 20, 20], np.float32),
        0.99,
        np.array([[8, 9], [14, 9], [11, 12], [9, 15], [13, 15]], np.float32),
    )
    out = st.align(decoded(0, 200), np.full((24, 32, 3), 200, np.uint8), [face, face], R, 0)
    assert out.crops.shape == (2, R, R, 3) and len(out.matrices) == 2


def test_paste_of_a_frame_without_faces_is_the_decoded_frame_itself():
    a = st.align(decoded(3), None, [], R, 0)
    pasted = st.paste(st.RestoredFrame(a, a.crops, None), "yuv420p", 0)
    assert pasted.frame is a.decoded.frame and pasted.faces == 0


def test_paste_of_a_rotated_frame_keeps_the_input_timestamps():
    rgb = np.full((32, 24, 3), 7, np.uint8)  # upright
    a = st.align(decoded(3), rgb, [], R, 1)
    pasted = st.paste(st.RestoredFrame(a, a.crops, None), "yuv420p", 1)
    assert (pasted.frame.width, pasted.frame.height) == (24, 32)
    assert (pasted.frame.pts, pasted.frame.time_base) == (30, Fraction(1, 250))


def test_decoder_yields_frames_in_order_with_the_audio_packets_and_stops_at_max_frames(tmp_path):
    clip = write_clip(tmp_path / "c.mp4", synthetic_frames(10, 64, 48), fps=25)
    with av.open(str(clip)) as c:
        items = list(st.Decoder(clip, c, c.streams.video[0], c.streams.audio))
    frames = [i for i in items if isinstance(i, st.DecodedFrame)]
    assert [f.index for f in frames] == list(range(10))
    assert any(isinstance(i, av.Packet) for i in items)
    with av.open(str(clip)) as c:
        dec = st.Decoder(clip, c, c.streams.video[0], (), max_frames=4)
        assert len(list(dec)) == 4 and dec.count == 4 and dec.end_s == pytest.approx(4 / 25)
