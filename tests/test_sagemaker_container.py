"""The SageMaker container side, run as the PyTorch training image starts it, against moto's server.

What SageMaker and the image's training toolkit do is done here by the test, from the plan's own
CreateTrainingJob requests: the inputs and the uploaded sourcedir.tar.gz are read back from S3, the
archive is unpacked into /opt/ml/code, channels are written as files under /opt/ml/input/data, the
hyperparameters and resource config go to /opt/ml/input/config, the SM_* variables are set as the
toolkit sets them, and the entry is started as its launcher starts it (torchrun for
`sagemaker_torch_distributed_enabled`, else python). The tree is a temporary folder bind-mounted on
/opt/ml in a private mount namespace (with `algo-1` in its /etc/hosts), so the entry sees the real paths.
Then /opt/ml/model goes to the job's S3 output, and the merge job runs the same way from it.

Not the image: the requirements are not pip-installed (this venv has them), and the CPU stands in
for the instance's GPUs (the plan's devices say cpu in the archive)."""
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import boto3
import pytest

from tunespec.compiler.plan import build_plan
from tunespec.compiler.spec_loader import load_spec
from tunespec.runtime.sourcedir import build_sourcedir

from seed_models import save_tiny_model
from test_sagemaker_apply import BUCKET, REGION, moto_server  # noqa: F401 (fixture)

OPT_ML = Path("/opt/ml")
HOST = "algo-1"
MASTER_PORT = 7777  # the toolkit's torchrun master port
pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                                reason="needs root for a private mount namespace (as .ci/run runs the tests)")


def split_s3(uri: str) -> tuple:
    bucket, _, key = uri[len("s3://"):].partition("/")
    return bucket, key


def spec_text(secret_arn: str) -> str:
    return textwrap.dedent(f"""\
        apiVersion: tunespec/v1
        name: tiny-container
        model: {{source: "s3://{BUCKET}/models/tiny-llama/", architecture: smollm2-135m, offline: true}}
        method: {{type: lora, lora: {{r: 4, alpha: 8, target_modules: [q_proj, v_proj]}}}}
        data:
          train: {{path: train.jsonl}}
          format: {{type: text, column: text, group_into_blocks: false}}
          max_seq_length: 32
        training: {{max_steps: 2, precision: fp32, micro_batch_size: 1, checkpoint_every_steps: 2}}
        distribution: {{strategy: ddp}}
        outputs: {{merged_model: true, sample_prompts: ["The game is"]}}
        backend:
          type: sagemaker
          instance_type: ml.g4dn.12xlarge
          role: arn:aws:iam::111122223333:role/SageMakerTrainingRole
          region: {REGION}
          output_s3: s3://{BUCKET}/runs
          framework_version: "2.5.1"
          py_version: py311
        secrets:
          hf_token: {{secrets_manager_arn: "{secret_arn}"}}
        """)


def uploaded_plan(root: Path, monkeypatch) -> dict:
    """The plan, with what `tunespec apply` puts in S3 before the job: inputs and the source archive."""
    s3 = boto3.client("s3", region_name=REGION)
    model = save_tiny_model(root / "tiny-llama", "llama", num_key_value_heads=1)
    for path in sorted(model.iterdir()):
        s3.upload_file(str(path), BUCKET, f"models/tiny-llama/{path.name}")
    (root / "train.jsonl").write_text("".join(json.dumps({"text": f"The game is number {i} of the year"}) + "\n"
                                              for i in range(8)))
    secret = boto3.client("secretsmanager", region_name=REGION).create_secret(
        Name="hf-token", SecretString="hf_from_secrets_manager")
    (root / "spec.yaml").write_text(spec_text(secret["ARN"]))
    monkeypatch.chdir(root)
    plan = build_plan(load_spec(Path("spec.yaml")))
    plan["devices"]["kind"] = "cpu"  # this machine's CPU stands in for the instance's four GPUs
    assert set(plan["inference"]["max_memory"]) == {"0", "1", "2", "3", "cpu"}  # the merge job's placement
    plan["inference"] = dict(plan["inference"], max_memory={"cpu": "4GiB"}, dtype="fp32")  # and for its GPUs
    for upload in plan["backend"]["uploads"]:
        s3.upload_file(upload["source"], *split_s3(upload["s3_uri"]))
    s3.put_object(Body=build_sourcedir(plan), **dict(zip(("Bucket", "Key"), split_s3(plan["backend"]["sourcedir"]["s3_uri"]))))
    return plan


def hyperparameter(request: dict, name: str):
    return json.loads(request["HyperParameters"][name])


def download_prefix(uri: str, target: Path) -> None:
    """File mode: every object under the S3 prefix, by its key after the prefix's last `/`."""
    s3 = boto3.client("s3", region_name=REGION)
    bucket, key = split_s3(uri)
    base = key[:key.rfind("/") + 1]
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key):
        for item in page.get("Contents", []):
            path = target / item["Key"][len(base):]
            path.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, item["Key"], str(path))


def image_tree(root: Path, request: dict) -> Path:
    """/opt/ml as SageMaker and the toolkit leave it before the entry starts."""
    config = root / "input" / "config"
    config.mkdir(parents=True)
    hosts = [f"algo-{i + 1}" for i in range(request["ResourceConfig"]["InstanceCount"])]
    (config / "hyperparameters.json").write_text(json.dumps(request["HyperParameters"]))
    (config / "resourceconfig.json").write_text(json.dumps(
        {"current_host": HOST, "hosts": hosts, "network_interface_name": "eth0"}))
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in request["InputDataConfig"]}
    (config / "inputdataconfig.json").write_text(json.dumps(
        {name: {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"}
         for name in channels}))
    for name, uri in channels.items():
        (root / "input" / "data" / name).mkdir(parents=True)
        download_prefix(uri, root / "input" / "data" / name)
    for folder in ("model", "output/data", "checkpoints", "code"):
        (root / folder).mkdir(parents=True)
    bucket, key = split_s3(hyperparameter(request, "sagemaker_submit_directory"))
    archive = boto3.client("s3", region_name=REGION).get_object(Bucket=bucket, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(root / "code", filter="data")
    return root


def toolkit_environment(request: dict, gpus: int) -> dict:
    """The SM_* variables the training toolkit sets, plus the job's own Environment."""
    hps = {name: json.loads(value) for name, value in request["HyperParameters"].items()}
    user = {name: value for name, value in hps.items() if not name.startswith("sagemaker_")}
    channels = sorted(c["ChannelName"] for c in request["InputDataConfig"])
    user_args = [item for name, value in user.items() for item in (f"--{name}", str(value))]
    hosts = [f"algo-{i + 1}" for i in range(request["ResourceConfig"]["InstanceCount"])]
    env = {
        "SM_HOSTS": json.dumps(hosts), "SM_CURRENT_HOST": HOST, "SM_NUM_GPUS": str(gpus), "SM_NUM_CPUS": "2",
        "SM_MODEL_DIR": "/opt/ml/model", "SM_INPUT_DIR": "/opt/ml/input", "SM_INPUT_CONFIG_DIR": "/opt/ml/input/config",
        "SM_OUTPUT_DIR": "/opt/ml/output", "SM_OUTPUT_DATA_DIR": "/opt/ml/output/data",
        "SM_CHANNELS": json.dumps(channels), "SM_HPS": json.dumps(user), "SM_USER_ARGS": json.dumps(user_args),
        "SM_USER_ENTRY_POINT": hps["sagemaker_program"], "SM_MODULE_NAME": hps["sagemaker_program"][:-3],
        "SM_MODULE_DIR": hps["sagemaker_submit_directory"], "SM_LOG_LEVEL": str(hps["sagemaker_container_log_level"]),
        "SM_CURRENT_INSTANCE_TYPE": request["ResourceConfig"]["InstanceType"], "SM_MASTER_ADDR": hosts[0],
        "SM_MASTER_PORT": str(MASTER_PORT),
        **{f"SM_CHANNEL_{name.upper()}": f"/opt/ml/input/data/{name}" for name in channels},
        **{f"SM_HP_{name.upper()}": str(value) for name, value in user.items()},
    }
    return {**env, **request.get("Environment", {})}


def launcher_command(request: dict, gpus: int) -> list:
    """How the PyTorch image's toolkit starts `sagemaker_program` with the user hyperparameters as arguments."""
    environment = toolkit_environment(request, gpus)
    program = [environment["SM_USER_ENTRY_POINT"], *json.loads(environment["SM_USER_ARGS"])]
    if json.loads(request["HyperParameters"].get("sagemaker_torch_distributed_enabled", "false")):
        hosts = json.loads(environment["SM_HOSTS"])
        return [sys.executable, "-m", "torch.distributed.run", "--nnodes", str(len(hosts)), "--nproc_per_node",
                str(gpus), "--master_addr", hosts[0], "--master_port", str(MASTER_PORT),
                "--node_rank", str(hosts.index(HOST)), *program]
    return [sys.executable, *program]


def run_job(root: Path, request: dict, gpus: int) -> subprocess.CompletedProcess:
    """The job's container: the tree on /opt/ml, algo-1 in /etc/hosts, the launcher in /opt/ml/code."""
    hosts_file = root.parent / f"{root.name}.hosts"
    hosts_file.write_text(f"127.0.0.1 localhost {HOST}\n")
    created = not OPT_ML.exists()
    OPT_ML.mkdir(parents=True, exist_ok=True)  # the mount point; the tree itself stays in `root`
    inner = (f'mount --bind "{root}" /opt/ml && mount --bind "{hosts_file}" /etc/hosts && cd /opt/ml/code && '
             f'exec {" ".join(launcher_command(request, gpus))}')
    env = {"PATH": os.environ["PATH"], "HOME": str(root.parent), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
           "HF_HUB_OFFLINE": "1", **{k: v for k, v in os.environ.items() if k.startswith("AWS_")},
           **toolkit_environment(request, gpus)}
    env.pop("HF_TOKEN", None)
    try:
        return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", inner], env=env,
                              capture_output=True, text=True, timeout=900)
    finally:
        if created:
            OPT_ML.rmdir()


def upload_model_dir(model_dir: Path, request: dict) -> None:
    """SageMaker's end of a job: /opt/ml/model to `S3OutputPath/<job>/output/model/` (CompressionType NONE)."""
    bucket, key = split_s3(request["OutputDataConfig"]["S3OutputPath"].rstrip("/") + "/")
    s3 = boto3.client("s3", region_name=REGION)
    for path in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        s3.upload_file(str(path), bucket, f"{key}{request['TrainingJobName']}/output/model/"
                                           f"{path.relative_to(model_dir).as_posix()}")


@pytest.fixture
def jobs(tmp_path, monkeypatch, moto_server):  # noqa: F811 (the fixture imported above)
    plan = uploaded_plan(tmp_path / "user", monkeypatch)
    train_request = plan["backend"]["create_training_job_request"]
    gpus = plan["launch"]["processes_per_node"]
    train = run_job(image_tree(tmp_path / "train-job", train_request), train_request, gpus)
    merge = None
    if train.returncode == 0:
        upload_model_dir(tmp_path / "train-job" / "model", train_request)
        merge_request = plan["backend"]["merge_job_request"]
        merge = run_job(image_tree(tmp_path / "merge-job", merge_request), merge_request, gpus)
    return plan, tmp_path, train, merge


def test_training_job_under_torchrun_then_merge_job_from_its_s3_output(jobs):
    """One test: both jobs are needed for the merge, and each costs CPU minutes."""
    plan, root, train, merge = jobs
    assert train.returncode == 0, train.stderr[-4000:]
    assert "torch.distributed" in " ".join(launcher_command(plan["backend"]["create_training_job_request"], 4))
    model_dir = root / "train-job" / "model"
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["global_step"] == 2
    assert (model_dir / "adapter" / "adapter_config.json").is_file()
    assert not (model_dir / "merged").exists()  # the merge job's work
    # The entry installed the archive's wheel beside itself and ran that tunespec, not this checkout's.
    (site,) = (root / "train-job" / "code").glob(".site-*")
    assert (site / "tunespec" / "runtime" / "train.py").is_file()
    assert f"from /opt/ml/code/{site.name}/tunespec" in train.stdout

    assert merge.returncode == 0, merge.stderr[-4000:]
    merged = root / "merge-job" / "model" / "merged"
    assert (merged / "config.json").is_file() and list(merged.glob("*.safetensors"))
    samples = json.loads((root / "merge-job" / "model" / "samples.json").read_text())
    assert samples and samples[0]["prompt"] == "The game is"


def test_a_missing_secret_fails_the_job_before_training(tmp_path, monkeypatch, moto_server):  # noqa: F811
    plan = uploaded_plan(tmp_path / "user", monkeypatch)
    boto3.client("secretsmanager", region_name=REGION).delete_secret(SecretId="hf-token",
                                                                      ForceDeleteWithoutRecovery=True)
    request = dict(plan["backend"]["create_training_job_request"])
    request["HyperParameters"] = {k: v for k, v in request["HyperParameters"].items()
                                  if k != "sagemaker_torch_distributed_enabled"}
    done = run_job(image_tree(tmp_path / "job", request), request, 1)
    assert done.returncode != 0
    assert "ResourceNotFoundException" in done.stderr
    assert not (tmp_path / "job" / "model" / "metrics.json").exists()

