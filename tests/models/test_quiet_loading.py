"""transformers' load reports, progress bars and warnings go to seawall's debug log, only while a model loads."""

from __future__ import annotations

import logging
import warnings

import pytest

from seawall.models import load_encoder_for_classification
from seawall.models.quiet import quiet_transformers


@pytest.fixture
def transformers_warnings():
    """transformers' default verbosity (the CLI tests lower it to errors for the whole process)."""
    from transformers.utils import logging as hf_logging

    before = hf_logging.get_verbosity()
    hf_logging.set_verbosity_warning()
    yield
    hf_logging.set_verbosity(before)


def test_load_report_goes_to_the_debug_log(tiny_llama_dir, capfd, caplog, transformers_warnings):
    from transformers.utils import logging as hf_logging

    folder, _ = tiny_llama_dir
    handlers_before = list(hf_logging.get_logger().handlers)
    with caplog.at_level(logging.DEBUG, logger="seawall.models"):
        # a fresh classification head: transformers reports its weights as MISSING
        load_encoder_for_classification(folder, num_labels=2)
    printed = capfd.readouterr()
    assert "LOAD REPORT" not in printed.err + printed.out and "Loading weights" not in printed.err
    assert any("LOAD REPORT" in r.getMessage() and r.levelno == logging.DEBUG for r in caplog.records)
    # scoped: transformers' own handlers and progress bars are back afterwards
    assert hf_logging.get_logger().handlers == handlers_before
    assert hf_logging.is_progress_bar_enabled()


def test_warnings_are_logged_inside_the_block_only(caplog, recwarn):
    with caplog.at_level(logging.DEBUG, logger="seawall.models"), quiet_transformers():
        warnings.warn("traced a python condition", UserWarning, stacklevel=1)
    assert not recwarn.list  # not shown
    assert "UserWarning: traced a python condition" in caplog.text
    warnings.warn("outside", UserWarning, stacklevel=1)
    assert [str(w.message) for w in recwarn.list] == ["outside"]  # the filters were restored


def test_gguf_conversion_prints_no_transformers_bars(tiny_gguf, tmp_path, capfd, transformers_warnings):
    from transformers.utils import logging as hf_logging

    from seawall.models import convert_gguf

    path, _ = tiny_gguf
    hf_logging.enable_progress_bar()
    out = convert_gguf(path, tmp_path / "converted")
    printed = capfd.readouterr()
    assert (out / "config.json").is_file()
    # transformers draws "Converting and de-quantizing GGUF tensors" and "Writing model shards" bars otherwise
    assert "GGUF tensors" not in printed.err + printed.out and "model shards" not in printed.err + printed.out
    assert hf_logging.is_progress_bar_enabled()
