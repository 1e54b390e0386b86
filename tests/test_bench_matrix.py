"""benchmarks/matrix.py: the table on fake rows (no model is built), the child-failure reason, sizes."""

import pytest

from benchmarks import matrix

CONFIGS = ["tf-fp32", "tf-bf16", "jax-fp32"]


def _rows():
    good = {
        "model": "segnet_basic", "size": "360x480", "params": 1_416_587,
        "train": {"tf-fp32": {"images_per_s": 0.625}, "tf-bf16": {"images_per_s": 1.25},
                  "jax-fp32": {"images_per_s": 0.5}},
        "train_rss_mb": {"tf-fp32": 3305.4, "tf-bf16": 2999.0, "jax-fp32": 4100.2},
        "infer": {"latency_ms": {"keras": 50.04, "saved_model": 61.0, "tflite": 47.4},
                  "size_mb": {"keras": 5.5, "saved_model": 11.5, "tflite": 5.4},
                  "errors": {"tflite_int8": "ValueError: TFLite conversion failed"},
                  "peak_rss_mb": 975.0},
    }
    tf_only = {
        "model": "crf_as_rnn", "size": "64x96", "params": None,
        "train": {"tf-fp32": {"error": "timed out after 5 s"}, "tf-bf16": {"error": "timed out after 5 s"},
                  "jax-fp32": {"error": "crf_as_rnn is tensorflow only (its card); no jax run"}},
        "train_rss_mb": {},
        "infer": {"error": "MemoryError: out of memory"},
    }
    return [good, tf_only]


def test_format_table_cells_and_numbered_notes():
    text = matrix.format_table(_rows(), CONFIGS, title="T")
    lines = text.splitlines()
    assert lines[0] == "T"
    good = next(ln for ln in lines if ln.startswith("segnet_basic"))
    cells = good.replace("|", " ").split()
    # model, size, params, 3 train, 4 latency, 4 sizes, 2 RSS
    assert cells == ["segnet_basic", "360x480", "1,416,587", "0.62", "1.25", "0.50",
                     "50.0", "61.0", "47.4", "n/a[1]", "5.5", "11.5", "5.4", "n/a[1]", "4100", "975"]
    bad = next(ln for ln in lines if ln.startswith("crf_as_rnn")).replace("|", " ").split()
    assert bad[:6] == ["crf_as_rnn", "64x96", "?", "n/a[2]", "n/a[2]", "n/a[3]"]
    assert bad[6:14] == ["n/a[4]"] * 8 and bad[14:] == ["-", "-"]
    # each distinct reason once, numbered in order of first use
    assert "[1] ValueError: TFLite conversion failed" in lines
    assert "[2] timed out after 5 s" in lines
    assert "[3] crf_as_rnn is tensorflow only (its card); no jax run" in lines
    assert "[4] MemoryError: out of memory" in lines
    assert not any(ln.startswith("[5]") for ln in lines)
    assert "  segnet_basic: TF fp32 3305, TF bf16 2999, JAX fp32 4100" in lines
    # every table line has the same width (header, rule, rows)
    header_at = next(i for i, ln in enumerate(lines) if ln.startswith("model"))
    widths = {len(ln) for ln in lines[header_at - 1:header_at + 4]}
    assert len(widths) == 1, widths


def test_format_table_one_config_keeps_columns_aligned():
    lines = matrix.format_table(_rows()[:1], ["tf-fp32"]).splitlines()  # label wider than one column
    bars = [[i for i, ch in enumerate(ln) if ch == "|"] for ln in (lines[0], lines[1], lines[3])]
    assert len(bars[0]) == 4 and bars[0] == bars[1] == bars[2], bars


def test_reason_takes_the_exception_line():
    stderr = "I0000 some log\nTraceback (most recent call last):\n  File x\nValueError: bad size 7\n\nW0000 exit log\n"
    assert matrix.reason(stderr, 1) == "ValueError: bad size 7"
    assert matrix.reason("jaxlib.xla_extension.XlaRuntimeError: INTERNAL: boom\n", 1).startswith("jaxlib.")
    assert matrix.reason("", 137) == "exit status 137"


def test_parse_model_sizes():
    assert matrix.parse_model("segnet", (360, 480)) == ("segnet", (360, 480))
    assert matrix.parse_model("fcn8s@240x320", (360, 480)) == ("fcn8s", (240, 320))
    with pytest.raises(ValueError, match="fcn8s@240"):
        matrix.parse_model("fcn8s@240", (360, 480))
