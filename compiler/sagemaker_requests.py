"""The CreateTrainingJob requests of a plan (training and merge job) and the same job as SDK 2.x arguments.

The request follows the conventions the SageMaker framework containers expect from SDK 2.x:
JSON-quoted hyperparameters, `sagemaker_program` / `sagemaker_submit_directory` (an uploaded
sourcedir.tar.gz holding tunespec's own trainer, the plan and a pinned requirements file),
`sagemaker_torch_distributed_enabled` and `mp_parameters` for SMP v2.
"""
import json
from typing import Dict, List, Optional

from ..schema.contract import (PLAN_FILE, PLAN_HYPERPARAMETER, RUN_CHANNEL, TASK_HYPERPARAMETER, merge_job_name,
                               s3_channel, train_output_uri)

ENTRY_POINT = "tunespec_entry.py"  # written into sourcedir.tar.gz by tunespec.runtime.sourcedir
CONTAINER_LOG_LEVEL = 20  # logging.INFO, the SDK's default `container_log_level`
# SageMaker keeps this folder between the jobs that reuse a warm pool (managed warm pools' persistent
# cache); seed 000 downloads the model into it so that its merge job does not download it again.
WARM_POOL_CACHE = "/opt/ml/sagemaker/warmpoolcache"


def sdk_hyperparameters(job_name: str, sourcedir_s3: str, region: str) -> dict:
    """What `Framework._prepare_for_training` adds for every job of SDK 2.x's framework estimators."""
    return {
        "sagemaker_program": ENTRY_POINT,
        "sagemaker_submit_directory": sourcedir_s3,
        "sagemaker_container_log_level": CONTAINER_LOG_LEVEL,
        "sagemaker_job_name": job_name,
        "sagemaker_region": region,
    }


def distribution_hyperparameters(distribution: dict, instance_type: str) -> dict:
    """`PyTorch._pytorch_distribution_configuration` of SDK 2.x, for the two forms tunespec uses."""
    if not distribution:
        return {}
    hps: dict = {}
    if "smdistributed" in distribution:
        hps["mp_parameters"] = distribution["smdistributed"]["modelparallel"]["parameters"]
        hps["sagemaker_distributed_dataparallel_enabled"] = False
    hps["sagemaker_torch_distributed_enabled"] = True
    hps["sagemaker_instance_type"] = instance_type
    return hps


def warm_pool_environment(backend: dict, environment: dict) -> dict:
    """With a warm pool kept (keep_alive_seconds), the Hugging Face cache in its persistent cache, unless
    backend.environment sets HF_HOME itself."""
    if not backend.get("keep_alive_seconds"):
        return environment
    return dict(sorted({"HF_HOME": f"{WARM_POOL_CACHE}/huggingface", **environment}.items()))


def warm_pool_warnings(train: dict, merge: Optional[dict]) -> List[dict]:
    """A merge job reuses the training job's warm pool (and its model cache) only with the same ResourceConfig."""
    if merge is None or "KeepAlivePeriodInSeconds" not in train["ResourceConfig"] or \
            merge["ResourceConfig"] == train["ResourceConfig"]:
        return []
    return [{"code": "sagemaker-warm-pool-not-reused", "message": (
        f"the merge job runs on 1 instance, not the training job's {train['ResourceConfig']['InstanceCount']}: it "
        "cannot reuse that warm pool and downloads the base model again")}]


def encode_hyperparameters(hyperparameters: dict) -> Dict[str, str]:
    """JSON-quote every value, as SDK 2.x does (`EstimatorBase._json_encode_hyperparameters`)."""
    return {str(key): json.dumps(value) for key, value in hyperparameters.items()}


def training_request(job_name: str, backend: dict, image: str, hyperparameters: dict, channels: List[dict],
                     environment: dict, checkpoint_s3: Optional[str], tags: List[dict]) -> dict:
    spot = backend.get("spot") or {}
    output = {"S3OutputPath": backend["output_s3"]}
    if backend["disable_output_compression"]:
        output["CompressionType"] = "NONE"
    resources_config = {"InstanceType": backend["instance_type"], "InstanceCount": backend["instance_count"],
                        "VolumeSizeInGB": backend["volume_size_gb"]}
    if backend.get("keep_alive_seconds"):
        resources_config["KeepAlivePeriodInSeconds"] = backend["keep_alive_seconds"]
    stopping = {"MaxRuntimeInSeconds": backend["max_run_seconds"]}
    request = {
        "TrainingJobName": job_name,
        "RoleArn": backend["role"],
        "AlgorithmSpecification": {"TrainingImage": image, "TrainingInputMode": "File",
                                   "EnableSageMakerMetricsTimeSeries": True},
        "HyperParameters": encode_hyperparameters(hyperparameters),
        "OutputDataConfig": output,
        "ResourceConfig": resources_config,
        "StoppingCondition": stopping,
        "ProfilerConfig": {"DisableProfiler": True},
        "Tags": tags,
    }
    if channels:
        request["InputDataConfig"] = [s3_channel(c["name"], c["s3_uri"]) for c in channels]
    if environment:
        request["Environment"] = environment
    if checkpoint_s3:
        request["CheckpointConfig"] = {"S3Uri": checkpoint_s3}
    if spot.get("enabled"):
        request["EnableManagedSpotTraining"] = True
        stopping["MaxWaitTimeInSeconds"] = spot["max_wait_seconds"]
    return request


def merge_request(train: dict, plan: dict, sourcedir_s3: str, channels: List[dict]) -> Optional[dict]:
    """Seed 000's second job: merge the adapter into the base model and answer the sample prompts."""
    outputs = plan["outputs"]
    if not (outputs.get("merged_model") or outputs.get("sample_prompts")):
        return None
    job_name = merge_job_name(train["TrainingJobName"])
    region = json.loads(train["HyperParameters"]["sagemaker_region"])
    # One process that sees every GPU (device_map="auto"), so no torchrun/SMP hyperparameters.
    hps = {PLAN_HYPERPARAMETER: PLAN_FILE, TASK_HYPERPARAMETER: "merge",
           **sdk_hyperparameters(job_name, sourcedir_s3, region)}
    request = json.loads(json.dumps(train))
    request["TrainingJobName"] = job_name
    request["HyperParameters"] = encode_hyperparameters(hps)
    request["ResourceConfig"]["InstanceCount"] = 1
    request["InputDataConfig"] = [s3_channel(RUN_CHANNEL, train_output_uri(train))] + [
        s3_channel(c["name"], c["s3_uri"]) for c in channels if c["name"] == "model"]
    request.pop("CheckpointConfig", None)
    request.pop("EnableManagedSpotTraining", None)
    request["StoppingCondition"].pop("MaxWaitTimeInSeconds", None)
    return request


def estimator_args(backend: dict, sourcedir_s3: str, user_hps: dict, distribution: dict, environment: dict,
                   checkpoint_s3: Optional[str], tags: List[dict]) -> dict:
    """The same job as `sagemaker.pytorch.PyTorch(**args)` of SDK 2.x (the recipes' way of writing it)."""
    spot = backend.get("spot") or {}
    args = {
        "entry_point": ENTRY_POINT,
        "source_dir": sourcedir_s3,
        "role": backend["role"],
        "framework_version": backend["framework_version"],
        "py_version": backend["py_version"],
        "instance_type": backend["instance_type"],
        "instance_count": backend["instance_count"],
        "volume_size": backend["volume_size_gb"],
        "max_run": backend["max_run_seconds"],
        "output_path": backend["output_s3"],
        "disable_output_compression": backend["disable_output_compression"],
        "hyperparameters": user_hps,
        "debugger_hook_config": False,
        "disable_profiler": True,
        "tags": tags,
    }
    if distribution:
        args["distribution"] = distribution
    if environment:
        args["environment"] = environment
    if backend.get("keep_alive_seconds"):
        args["keep_alive_period_in_seconds"] = backend["keep_alive_seconds"]
    if checkpoint_s3:
        args["checkpoint_s3_uri"] = checkpoint_s3
    if spot.get("enabled"):
        args["use_spot_instances"] = True
        args["max_wait"] = spot["max_wait_seconds"]
    return args
