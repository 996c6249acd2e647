"""`tunespec probe SPEC`: run a few real steps of the spec's model shape here, measured against the estimate."""
from rich.markup import escape
from rich.table import Table

from ..compiler.probe_plan import layers_that_fit, single_device_plan, with_layers
from .console import out
from .loading import load_spec_argument


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("probe", help="measure a few training steps of the spec's model shape here")
    parser.add_argument("spec")
    parser.add_argument("--steps", type=int, default=8, help="training steps to run (3 are warm-up)")
    parser.add_argument("--layers", type=int, help="build this many layers (default: as many as fit)")
    parser.set_defaults(run=run)


def _row(table: Table, name: str, measured, estimated, unit: str) -> None:
    if measured is None:
        return
    error = f"{estimated / measured - 1:+.1%}" if estimated else "—"
    table.add_row(name, f"{measured:,.2f} {unit}", f"{estimated:,.2f} {unit}" if estimated else "—", error)


def run(args) -> int:
    loaded = load_spec_argument(args.spec)
    from ..schema.kernels import missing_kernels
    from ..runtime.probe import local_hardware, measure

    hardware = local_hardware()
    plan = single_device_plan(loaded, hardware)
    full = plan["model"]["architecture"]["num_hidden_layers"]
    layers = args.layers or layers_that_fit(plan)
    plan = with_layers(plan, layers)
    if hardware == "cpu":
        out.print("[bold yellow]No GPU here: this probe runs on the CPU in fp32. CPU numbers are not GPU "
                  "numbers; they only show that the model, method and data shape run.[/]")
    out.print(f"Probing {plan['model']['architecture']['name']} with {layers} of {full} layers on {hardware}: "
              f"{plan['method']['type']}, micro batch {plan['batch']['micro_batch_size']}, sequence "
              f"{plan['batch']['sequence_length']}, checkpointing "
              f"{'on' if plan['trainer']['gradient_checkpointing'] else 'off'}, {args.steps} steps")
    missing = missing_kernels(plan)
    if missing:
        for message in missing:
            out.print(f"[red]error:[/] {escape(message)}")
        return 2
    measured = measure(plan, layers, steps=args.steps)
    memory, speed = plan["estimates"]["memory"], plan["estimates"]["throughput"]
    table = Table(title=f"probe: measured on {measured['device']} vs estimated", title_justify="left")
    for column in ("", "measured", "estimated", "estimate error"):
        table.add_column(column)
    gib = 2**30
    if "peak_allocated_bytes" in measured:
        _row(table, "peak memory allocated", measured["peak_allocated_bytes"] / gib,
             memory["peak_allocated_bytes"] / gib, "GiB")
        _row(table, "peak memory reserved", measured["peak_reserved_bytes"] / gib,
             memory["peak_reserved_bytes"] / gib, "GiB")
    else:
        _row(table, "peak process memory (RSS)", measured["peak_rss_bytes"] / gib, None, "GiB")
    _row(table, "tokens/s", measured["tokens_per_s"], speed.get("tokens_per_s_total"), "")
    out.print(table)
    if layers < full:
        why = "as --layers asked" if args.layers else f"the whole model does not fit one {hardware}"
        out.print(f"Built {layers} of {full} layers ({why}); the estimate is for the same layer count.")
    return 0
