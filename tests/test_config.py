"""kseg train --config / --print-config: every option has a key, the file round-trips, the command line wins."""

import yaml

from kseg import cli, config, data


def _resolved(argv):
    return config.resolved_config(cli.build_parser().parse_args(config.expand_argv(argv)))


def test_every_option_round_trips_through_a_config(tmp_path):
    argv = ["train", "--model", "segnet_basic", "--data", "d", "--crop", "32", "48", "--scale", "1", "1",
            "--no-flip", "--optimizer", "sgd", "--loss", "dice", "--model-arg", "width=4",
            "--model-arg", "depths=[1, 1]", "--steps", "7", "--num-rois", "8", "--val-split", "none"]
    full = _resolved(argv)
    assert set(full) == set(config.train_keys())  # every option of kseg train has a config key
    path = tmp_path / "run.yaml"
    path.write_text(config.dump_config(full))
    assert _resolved(["train", "--config", str(path)]) == full  # the file alone gives the same run
    over = _resolved(["train", "--config", str(path), "--epochs", "2", "--model-arg", "width=8"])
    assert over["epochs"] == 2 and over["model_arg"] == {"width": 8, "depths": [1, 1]}  # the command line wins
    dashed = tmp_path / "dashed.yaml"
    dashed.write_text("model: fcn8s\ndata: d\nbatch-size: 3\nmodel_arg: {width: 2}\n")
    got = _resolved(["train", "--config", str(dashed)])
    assert got["batch_size"] == 3 and got["model"] == "fcn8s" and got["model_arg"] == {"width": 2}


def test_bad_config_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: segnet\nbatchsize: 3\n")
    assert cli.main(["train", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml" in err and "unknown key 'batchsize'" in err and "batch_size" in err
    assert cli.main(["train", "--config", str(tmp_path / "none.yaml")]) == 2


def test_print_config_and_resolved_config_in_out(tmp_path, capsys):
    root = data.write_synthetic_dataset(tmp_path / "d", {"train": 2}, height=24, width=32, ignore_label=11)
    run = tmp_path / "run.yaml"
    run.write_text(yaml.safe_dump({"model": "segnet_basic", "data": str(root), "crop": [16, 32], "batch_size": 2,
                                   "epochs": 1, "steps_per_epoch": 1, "model_arg": {"width": 2},
                                   "val_split": "none", "quiet": True, "out": str(tmp_path / "out")}))
    assert cli.main(["train", "--config", str(run), "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["crop"] == [16, 32] and printed["model_arg"] == {"width": 2}
    assert not (tmp_path / "out").exists()  # --print-config trains nothing
    assert cli.main(["train", "--config", str(run)]) == 0
    written = yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())
    assert written == printed  # the run's resolved config sits beside its results
