"""The human summary of a plan: the same rows feed the terminal table and summary.md."""
from typing import List, Tuple

from . import budget

Row = Tuple[str, str]


def _count(n) -> str:
    if n is None:
        return "unknown"
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:,.2f}{unit}"
    return str(n)


def model_rows(plan: dict) -> List[Row]:
    model, arch, params = plan["model"], plan["model"]["architecture"], plan["model"]["parameters"]
    rows = [("model", f"{model['source']} ({arch['name']}, {model['source_kind']})"),
            ("parameters", f"{_count(params['total'])} total")]
    if arch.get("num_local_experts"):
        rows.append(("active per token", f"{_count(params['active_per_token'])} "
                                         f"({arch['num_experts_per_tok']} of {arch['num_local_experts']} experts)"))
    share = params["trainable"] / params["total"] * 100 if params["total"] else 0
    groups = params.get("trainable_by_group") or {}
    by_group = ": " + ", ".join(f"{group} {_count(n)}" for group, n in groups.items()) if len(groups) > 1 else ""
    rows.append(("trainable", f"{_count(params['trainable'])} ({share:.2f}%){by_group}"))
    method = plan["method"]
    text = method["type"]
    if method["lora"]:
        lora = method["lora"]
        targets = lora["target_modules"]
        targets = (targets if isinstance(targets, list) else [targets]) + lora.get("target_parameters", [])
        text += f", r={lora['r']} alpha={lora['alpha']} dropout={lora['dropout']:g} on {', '.join(targets)}"
    if method["quantization"]:
        q = method["quantization"]
        text += f"; {q['bits']}-bit {q['quant_type']}{' double-quant' if q['double_quant'] else ''}, " \
                f"compute {q['compute_dtype']}, storage {q['storage_dtype']}, k-bit preparation {q['kbit_preparation']}"
    rows.append(("method", text))
    rows.append(("attention", f"{model['attn_implementation']} ({model['attn_reason']})"))
    return rows


def layout_rows(plan: dict) -> List[Row]:
    d, p, b = plan["devices"], plan["parallel"], plan["batch"]
    where = d.get("instance_type") or d.get("hardware") or d["kind"]
    mem = f", {d['memory_gib']:g} GiB each" if d.get("memory_gib") else ""
    if d.get("cpu"):
        cpu = d["cpu"]
        devices = (f"this machine's CPU ({cpu['model'] or 'unknown model'}): {cpu['cores']} cores, "
                   f"{cpu['capability']}" + (f", {d['memory_gib']:g} GiB RAM" if d.get("memory_gib") else ""))
    elif d["kind"] == "cpu":
        devices = f"{d['nodes']} × {where}: {d['per_node']} process(es) on the CPU"
    else:
        devices = f"{d['nodes']} × {where}: {d['per_node']} × {d['accelerator']}{mem}"
    precision = plan["precision"]
    rows = [("devices", devices),
            ("precision", precision["resolved"] + (f" (auto: {precision['reason']})" if precision["reason"] else "")),
            ("parallel", f"{p['strategy']}: {p['world_size']} process(es), data ×{p['data_parallel']}, "
                         f"tensor ×{p['tensor_parallel']}, expert ×{p['expert_parallel']}, "
                         f"shard ×{p['shard_degree']}, pipeline ×{p['pipeline_stages']}"),
            ("global batch", f"{b['micro_batch_size']} micro × {b['gradient_accumulation']} accumulation × "
                             f"{b['data_parallel']} data-parallel = {b['global_batch_size']} sequences"),
            ("tokens per step", f"{b['tokens_per_step']:,} (sequence length {b['sequence_length']})")]
    row = (plan.get("data") or {}).get("packed_row_tokens")
    if row:
        rows.append(("packed rows", f"one padding-free row of {row:,} tokens per micro batch: documents "
                                    f"(each cut at {b['sequence_length']:,}) packed into it by best fit"))
    if b.get("total_steps"):
        rows.append(("steps", f"{b['total_steps']:,}"
                              + (f" ({b['steps_per_epoch']:,} per epoch)" if b.get("steps_per_epoch") else "")))
    return rows


def estimate_rows(plan: dict) -> List[Row]:
    est = plan.get("estimates") or {}
    rows: List[Row] = []
    memory = est.get("memory") or {}
    if memory:
        parts = ", ".join(f"{k} {v:.1f}" for k, v in (memory.get("breakdown_gib") or {}).items() if v >= 0.05)
        cap = memory.get("capacity_gib")
        verdict = memory.get("verdict", "?") if cap else "capacity unknown"
        rows.append(("memory per device", f"{memory.get('total_gib', 0):.1f} GiB"
                                          + (f" of {cap:g} GiB" if cap else "") + f": {verdict}"))
        if parts:
            rows.append(("memory breakdown (GiB)", parts))
    speed = est.get("throughput") or {}
    if speed.get("tokens_per_s_total"):
        rows.append(("throughput", f"{speed['tokens_per_s_total']:,.0f} tokens/s "
                                   f"({speed.get('tokens_per_s_per_device', 0):,.0f} per device)"))
    time = est.get("time") or {}
    if time.get("hours") is not None:
        rows.append(("time", f"{time['hours']:,.2f} h wall-clock"))
    cost = est.get("cost") or {}
    if cost.get("usd") is not None:
        rows.append(("cost", f"${cost['usd']:,.2f} on demand ({cost.get('instance_hours', 0):,.2f} instance-hours"
                             f" at ${cost.get('usd_per_instance_hour', 0):,.2f}/h, prices of {cost.get('price_date', '?')})"
                             + (" — EC2 rate, no SageMaker price on record" if "EC2" in cost.get("price_basis", "") else "")))
    status = est.get("budget")
    for limit, _, _ in budget.LIMITS if status else []:
        if limit in status:
            over = " — over budget" if limit in status["exceeded"] else ""
            rows.append((f"budget {limit}", budget.describe(status, limit) + over))
    for suggestion in est.get("suggestions") or []:
        rows.append(("suggestion", suggestion["message"] if isinstance(suggestion, dict) else str(suggestion)))
    return rows


def summary_sections(plan: dict) -> List[Tuple[str, List[Row]]]:
    sections = [("Model", model_rows(plan)), ("Layout", layout_rows(plan))]
    estimates = estimate_rows(plan)
    if estimates:
        sections.append(("Estimates", estimates))
    if "tuning" in plan:
        tuning = plan["tuning"]
        changes = ", ".join(f"{k}: {v}" for k, v in tuning["applied"].items())
        text = (f"{changes} ({tuning['reason']}; ~{tuning['tokens_per_s_before']:,.0f} → "
                f"~{tuning['tokens_per_s_after']:,.0f} tokens/s)") if changes else tuning["reason"]
        sections.append(("Tuned (--tune)", [("applied", text)]))
    if plan["warnings"]:
        sections.append(("Warnings", [(w["code"], w["message"] + (f" ({w['location']})" if "location" in w else ""))
                                      for w in plan["warnings"]]))
    return sections


def summary_markdown(plan: dict) -> str:
    lines = [f"# Plan: {plan['spec']['name']}", "",
             f"Spec hash `{plan['spec']['hash'][:16]}`, tunespec {plan['tunespec_version']}, "
             f"backend `{plan['backend']['type']}`.", ""]
    for title, rows in summary_sections(plan):
        lines += [f"## {title}", "", "| | |", "|---|---|"]
        lines += [f"| {label} | {value.replace('|', '/')} |" for label, value in rows]
        lines.append("")
    return "\n".join(lines)
