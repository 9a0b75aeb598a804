"""User errors: one line `error: ...` on stderr and exit status 2; bugs keep their traceback;
`INTRADA_DEBUG=1` shows the traceback of a user error; model references and weight files are checked."""

from __future__ import annotations

import os
import signal

import pytest
import torch

from modeling_intrada import FCDiscriminator, FCDiscriminatorConfig
from modeling_intrada.errors import (
    MissingInputError,
    StopSignals,
    TrainingStopped,
    UsageError,
    check_model_reference,
    load_pretrained,
    run_program,
    user_input,
)


def _fails(error: Exception):
    def main(argv):
        raise error

    return main


def test_a_user_error_is_one_line_and_exit_2(capsys, monkeypatch):
    monkeypatch.delenv("INTRADA_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        run_program(_fails(UsageError("expected A,\ngot B; do C")), [])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "error: expected A, got B; do C\n"


def test_a_bug_keeps_its_traceback(monkeypatch):
    monkeypatch.delenv("INTRADA_DEBUG", raising=False)
    with pytest.raises(ZeroDivisionError):
        run_program(_fails(ZeroDivisionError("bug")), [])


def test_debug_switch_shows_the_traceback(monkeypatch):
    monkeypatch.setenv("INTRADA_DEBUG", "1")
    with pytest.raises(UsageError, match="expected A"):
        run_program(_fails(UsageError("expected A")), [])


def test_user_input_turns_value_errors_into_usage_errors():
    with pytest.raises(UsageError, match="--x: bad"), user_input("--x"):
        raise ValueError("bad")
    with pytest.raises(MissingInputError) as info, user_input():
        raise FileNotFoundError("gone")
    assert isinstance(info.value, FileNotFoundError)  # callers catching FileNotFoundError still do


def test_model_reference_missing_folder_or_not_a_model(tmp_path):
    with pytest.raises(MissingInputError, match=r"--inter_model .*nowhere/model: no such folder"):
        check_model_reference(str(tmp_path / "nowhere" / "model"), "--inter_model")
    (tmp_path / "file.bin").write_bytes(b"x")
    with pytest.raises(UsageError, match=r"expected a saved model folder .* got a file"):
        check_model_reference(str(tmp_path / "file.bin"), "--model")
    assert check_model_reference("user/name", "--model") == "user/name"  # a Hub id, looked up later


def test_corrupt_safetensors_file_is_named(tmp_path):
    FCDiscriminator(FCDiscriminatorConfig(num_channels=3, ndf=4)).save_pretrained(tmp_path / "d")
    weights = tmp_path / "d" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:40])
    with pytest.raises(UsageError, match=r"--model .*cannot read the weights file .*model\.safetensors"):
        load_pretrained(FCDiscriminator.from_pretrained, str(tmp_path / "d"), "--model")


def test_load_pretrained_loads_a_good_folder(tmp_path):
    FCDiscriminator(FCDiscriminatorConfig(num_channels=3, ndf=4)).save_pretrained(tmp_path / "d")
    model = load_pretrained(FCDiscriminator.from_pretrained, str(tmp_path / "d"), "--model")
    assert isinstance(model, FCDiscriminator) and torch.isfinite(model.layers[0].weight).all()


def test_a_stopped_training_exits_with_the_signal_status_and_one_line(capsys):
    def main(argv):
        raise TrainingStopped("stage inter stopped by SIGTERM after step 4 of 10;\nresume", signal.SIGTERM)

    with pytest.raises(SystemExit) as exit_info:
        run_program(main, [])
    assert exit_info.value.code == 143
    assert capsys.readouterr().err == "error: stage inter stopped by SIGTERM after step 4 of 10; resume\n"


def test_stop_signals_are_recorded_then_the_previous_handlers_come_back():
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with StopSignals() as stop:
        assert stop.requested is None
        os.kill(os.getpid(), signal.SIGINT)  # no KeyboardInterrupt: recorded for the loop
        assert stop.requested == signal.SIGINT
        with pytest.raises(KeyboardInterrupt, match="second SIGTERM"):
            os.kill(os.getpid(), signal.SIGTERM)  # a second signal stops at once
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
