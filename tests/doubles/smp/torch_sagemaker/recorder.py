"""Every call of the double is appended as one JSON line to $SMP_DOUBLE_LOG, with the caller's rank."""
import json
import os


def record(call: str, **arguments) -> None:
    entry = {"call": call, "rank": int(os.environ.get("RANK", "0")), **arguments}
    with open(os.environ["SMP_DOUBLE_LOG"], "a", encoding="utf-8") as log:
        log.write(json.dumps(entry, sort_keys=True, default=str) + "\n")
