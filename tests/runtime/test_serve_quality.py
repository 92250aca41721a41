"""daefr-serve --quality S: the served model of an IQPFR checkpoint runs at S (a per-model
setting); a plain model refuses the flag (exit 2, one line). In-process: no server needed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from daefr.quality.checkpoint import load_conditioned_model
from daefr.runtime.serve import cli as serve_cli

BASE = ["--preset", "tiny", "--device", "cpu", "--threads", "1", "-q"]


@pytest.fixture()
def no_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """main() up to the model build, without PyTriton or ports (serve() must not be reached)."""
    monkeypatch.setattr(serve_cli, "require_pytriton", lambda: None)
    monkeypatch.setattr(serve_cli, "check_ports_free", lambda config: None)

    def refuse(*args, **kwargs):
        raise AssertionError("serve() reached")

    monkeypatch.setattr(serve_cli, "serve", refuse)


@pytest.mark.parametrize("weights", ["plain", "random"])
def test_quality_with_a_plain_model_is_exit_2_in_one_line(no_server, capsys, iqp_checkpoints, weights):
    flags = ["--random-weights"] if weights == "random" else ["--ckpt", str(iqp_checkpoints["plain"])]
    assert serve_cli.main([*BASE, *flags, "--quality", "0.5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "plain DAEFR model" in err


def test_conditioned_checkpoint_on_another_backend_is_exit_2(no_server, capsys, iqp_checkpoints):
    argv = [*BASE, "--ckpt", str(iqp_checkpoints["conditioned"]), "--backend", "openvino"]
    assert serve_cli.main(argv) == 2
    assert "torch backend only" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["-1", "2", "nan", "abc"])
def test_quality_out_of_range_is_a_usage_error(iqp_checkpoints, bad):
    with pytest.raises(SystemExit) as info:
        serve_cli.parse_args([*BASE, "--ckpt", str(iqp_checkpoints["conditioned"]), "--quality", bad])
    assert info.value.code == 2


def test_served_restorer_runs_at_the_given_quality(iqp_checkpoints, tmp_path: Path):
    ckpt = iqp_checkpoints["conditioned"]
    faces = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(5)) * 2 - 1
    reference = load_conditioned_model(ckpt, "tiny")
    codes = {}
    for s in (0.0, 1.0, None):
        extra = [] if s is None else ["--quality", str(s)]
        args = serve_cli.parse_args([*BASE, "--ckpt", str(ckpt), *extra])
        restorer = serve_cli.build_serve_restorer(args, tmp_path)
        try:
            restored, code_idx = restorer.restore(faces)
        finally:
            restorer.close()
        want = reference(faces, None if s is None else torch.full((2,), s))
        torch.testing.assert_close(restored, want.restored, rtol=0, atol=1e-5)
        assert torch.equal(code_idx, want.code_idx)
        codes[s] = code_idx
    assert not torch.equal(codes[0.0], codes[1.0])


def test_serve_bench_starts_its_server_at_the_same_quality(iqp_checkpoints):
    import argparse

    from daefr.runtime.serve.bench import add_serve_parser, check_serve_args, server_argv

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    serve = add_serve_parser(sub)
    argv = ["serve", *BASE, "--ckpt", str(iqp_checkpoints["conditioned"])]
    args = check_serve_args(serve, parser.parse_args([*argv, "--quality", "0.25"]))
    flags = server_argv(args)
    assert flags[flags.index("--quality") + 1] == "0.25"
    assert "--quality" not in server_argv(check_serve_args(serve, parser.parse_args(argv)))
