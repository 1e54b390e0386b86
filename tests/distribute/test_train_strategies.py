"""`kseg train --strategy mirrored|multiworker` end to end on a tiny synthetic CamVid-layout folder."""

import pathlib
import subprocess
import sys
import textwrap

import pytest

from kseg.distribute import free_ports
from test_distribute import env

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    from kseg.data import write_synthetic_dataset

    root = tmp_path_factory.mktemp("synthetic")
    write_synthetic_dataset(root, {"train": 8, "val": 2, "test": 2}, height=32, width=32, seed=0)
    return root


@pytest.mark.slow
def test_cli_multiworker_two_loopback_workers(tiny_folder, tmp_path):
    workers = [f"127.0.0.1:{p}" for p in free_ports(2)]
    procs = []
    for i in range(2):
        e = env()
        e["TF_CONFIG"] = (
            '{"cluster": {"worker": ["%s", "%s"]}, "task": {"type": "worker", "index": %d}}' % (*workers, i)
        )
        cmd = [sys.executable, "-m", "kseg.cli", "train", "--model", "segnet_basic", "--data", str(tiny_folder),
               "--crop", "32", "32", "--batch-size", "4", "--epochs", "1", "--steps-per-epoch", "3",
               "--model-arg", "width=4", "--strategy", "multiworker", "--precision", "mixed_bfloat16",
               "--out", str(tmp_path / f"out{i}" if i else tmp_path / "chief"), "--quiet"]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e))
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, err[-3000:]
    assert (tmp_path / "chief" / "model.keras").exists()
    assert not (tmp_path / "out1" / "model.keras").exists()  # only the chief writes the model
    assert (tmp_path / "chief" / "steps.log").read_text().split() == ["0", "1", "2"]


@pytest.mark.slow
def test_mirrored_strategy_over_two_logical_cpus(tiny_folder, tmp_path):
    script = textwrap.dedent(f"""
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from kseg import training
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        model, history = training.train("segnet_basic", {str(tiny_folder)!r}, out_dir={str(tmp_path)!r},
            epochs=1, steps_per_epoch=2, batch_size=4, crop=(32, 32), scale_range=(1, 1), val_split=None,
            model_kwargs={{"width": 4}}, strategy=strategy, verbose=0)
        assert strategy.num_replicas_in_sync == 2
        assert len(history.history["loss"]) == 1
        print("OK", history.history["loss"][0])
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240, env=env())
    assert out.returncode == 0 and "OK" in out.stdout, out.stderr[-3000:]
    assert (tmp_path / "model.keras").exists()


def test_precision_needs_model_by_name(tiny_folder, tmp_path):
    import kseg
    from kseg import training

    model = kseg.SegNetBasic(input_shape=(32, 32, 3), width=4)
    with pytest.raises(ValueError, match="needs the model by name"):
        training.train(model, tiny_folder, out_dir=tmp_path, epochs=1, precision="mixed_bfloat16")
