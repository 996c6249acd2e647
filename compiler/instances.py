"""Hardware facts of an instance type or local accelerator, by name, with its accelerator's facts and price."""
from .catalog import did_you_mean, load_hardware
from .errors import SpecError, SpecPath


def instance_names() -> list:
    """Every name lookup_instance accepts: SageMaker `ml.` names, plain EC2 names, local accelerators."""
    hardware = load_hardware()
    names = list(hardware["instances"])
    names += [name[len("ml."):] for name in hardware["instances"]]
    names += list(hardware["local"])
    return names


def lookup_instance(name: str, path: SpecPath = ("backend", "instance_type")) -> dict:
    """Hardware facts of an instance type (or local accelerator), with the accelerator's facts merged in.

    A plain EC2 name (`p4d.24xlarge`) is the same machine as its `ml.` name, priced at the EC2 rate.
    """
    hardware = load_hardware()
    instances = hardware["instances"]
    if name in hardware["local"]:
        entry = dict({"interconnect": None, **hardware["local"][name]}, accelerators_per_instance=1, vcpus=None,
                     host_memory_gib=None, on_demand_usd_per_hour=None, market="local")
    elif name in instances:
        entry = dict(instances[name], market="sagemaker")
        if entry["on_demand_usd_per_hour"] is None and entry.get("ec2_on_demand_usd_per_hour"):
            # No SageMaker list price on record: the same machine's EC2 rate, labelled as such, is a
            # better cost floor than none (SageMaker's rate is higher, by about 15% where both are known).
            entry.update(on_demand_usd_per_hour=entry["ec2_on_demand_usd_per_hour"], market="ec2-rate")
    elif f"ml.{name}" in instances:
        entry = dict(instances[f"ml.{name}"], market="ec2")
        entry["on_demand_usd_per_hour"] = entry["ec2_on_demand_usd_per_hour"]
    else:
        raise SpecError(
            f"unknown instance type `{name}`",
            path=path,
            hint=did_you_mean(name, instance_names()) or "see compiler/catalog/hardware.yaml for the known types",
        )
    accelerator = hardware["accelerators"][entry["accelerator"]]
    entry.pop("ec2_on_demand_usd_per_hour", None)
    entry.update(
        name=name,
        accelerator_name=accelerator["name"],
        kind=accelerator["kind"],
        memory_gib=accelerator["memory_gib"],
        peak_bf16_tflops=accelerator["peak_bf16_tflops"],
        peak_fp32_tflops=accelerator["peak_fp32_tflops"],
        supports_bf16=accelerator["supports_bf16"],
        supports_fp8=accelerator.get("supports_fp8", False),
        memory_bandwidth_gbps=accelerator["memory_bandwidth_gbps"],
        neuron_cores=accelerator.get("neuron_cores"),  # per chip
        price_source=hardware["price_source"].get("ec2" if entry["market"] == "ec2-rate" else entry["market"]),
        price_date=hardware["price_date"] if entry["market"] != "local" else None,
    )
    return entry
