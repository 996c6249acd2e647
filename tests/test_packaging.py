"""The wheel installs one package, `tunespec`, with its data files: no generic top-level names."""
import subprocess
import sys
import zipfile

from conftest import REPO


def test_wheel_holds_only_the_tunespec_package_and_its_data(tmp_path):
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO)],
                           capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("tunespec-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"tunespec", wheel.name.split("-py")[0] + ".dist-info"}
    for data in ("tunespec/schema/tunespec-v1.schema.json", "tunespec/compiler/catalog/models.yaml",
                 "tunespec/compiler/catalog/hardware.yaml", "tunespec/compiler/catalog/sagemaker_images.json",
                 "tunespec/cli/defaults/smollm2-viggo-lora.yaml", "tunespec/cli/defaults/data/viggo_train.csv"):
        assert data in names, data
