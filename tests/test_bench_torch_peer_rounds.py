"""benchmarks/torch_peer.py --rounds: sides alternate, the ratio is the median of the rounds' own
(no torch needed: the children are faked)."""

from benchmarks import torch_peer


def test_rounds_alternate_and_take_median_round_ratio(monkeypatch, capsys):
    calls = []
    steps = {"tf": [2.0, 4.0, 2.2], "torch": [1.0, 4.0, 2.0]}  # rounds' ratios 0.5, 1.0, 0.909: median 0.909

    def fake(python, side, model, precision, size, args, runtime="tf"):
        key = "torch" if side == "torch" else runtime
        calls.append(key)
        n = sum(c == key for c in calls) - 1
        return {"step_s": steps[key][n], "times": [steps[key][n]], "first_s": 9.0, "trainable": 5, "params": 7,
                "peak_rss_mb": 1.0, "version": "v"}

    monkeypatch.setattr(torch_peer, "run_child", fake)
    rows = torch_peer.main(["--models", "segnet", "--precisions", "float32", "--runtimes", "tf", "--rounds", "3",
                            "--torch-python", "python"])
    assert calls == ["tf", "torch", "torch", "tf", "tf", "torch"]
    (_, _, _, cells, ratios), = rows
    assert [round(r, 3) for r in ratios] == [0.5, 1.0, 0.909]
    assert cells["tf"]["step_s"] == 2.2 and cells["torch"]["step_s"] == 2.0  # the median round of each side
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("segnet "))
    assert "0.91x" in line and line.endswith("0.50, 1.00, 0.91")


def test_one_round_keeps_the_plain_ratio(monkeypatch, capsys):
    monkeypatch.setattr(torch_peer, "run_child", lambda python, side, *a, **k: {
        "step_s": 1.0 if side == "torch" else 2.0, "times": [1.0], "first_s": 1.0, "trainable": 1, "params": 1,
        "peak_rss_mb": 1.0, "version": "v"})
    torch_peer.main(["--models", "fcn8s", "--precisions", "bfloat16", "--runtimes", "tf", "--torch-python", "p"])
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("fcn8s "))
    assert line.rstrip().endswith("0.50x")
