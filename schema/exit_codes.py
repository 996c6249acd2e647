"""The exit codes CI reads (README, "Exit codes"): the CLI and the runtime return them. 2 is only ever an
invalid spec."""
OK = 0  # success; for `diff --exit-code` and `plan --check-lock`: nothing changed, nothing drifted
FAILED = 1  # a backend or this machine failed (not the spec)
INVALID_SPEC = 2  # the spec (or a spec at a git revision) is refused, with file:line:column
PLAN_CHANGED = 3  # `diff --exit-code`: the plan (or spec, lock or budget) changed
LOCK_DRIFT = 4  # `plan --check-lock`, `apply`: the lock no longer matches, or is missing under --check-lock
MISSING_EXTRA = 5  # an optional dependency (a tunespec extra) is not installed: the message names the install
JOB_CONFLICT = 6  # `apply`: a SageMaker job of another plan of the same spec runs (`--replace` stops it)
INTERRUPTED = 130
