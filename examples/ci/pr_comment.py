#!/usr/bin/env python3
"""Post (or update) one sticky pull-request comment with `tunespec diff` of the merge base against HEAD.

    python examples/ci/pr_comment.py --base-ref origin/main [--output comment.md] [--post] [PATH...]

Every spec under PATH (default: the whole repository) that the pull request touches is compared:
edited, added, renamed or deleted specs, and specs whose `extends` base, local data or lock changed.
The comment body is written to --output; with --post it replaces the body of the comment this script
posted before (found by its first line), or is posted as a new comment. Posting reads GITHUB_TOKEN,
GITHUB_REPOSITORY, GITHUB_EVENT_PATH and GITHUB_API_URL, which GitHub Actions sets.

Exit code: 2 when a spec at HEAD is invalid or over its budget, else 0 (a changed plan is for review,
not a failure).
"""
import argparse
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

MARKER = "<!-- tunespec-diff -->"  # the first line of the comment: how the next run finds it
INVALID_SPEC = 2


def git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout.strip()


def comment_body(base_ref: str, paths: list) -> tuple:
    base = git("rev-parse", "--short", git("merge-base", base_ref, "HEAD"))
    head = git("rev-parse", "--short", "HEAD")
    done = subprocess.run([sys.executable, "-m", "tunespec.cli.main", "diff", "--base", base, "--head", head,
                           "--format", "markdown", "--exit-code", *paths], capture_output=True, text=True)
    if done.returncode not in (0, 2, 3) or not done.stdout:
        sys.exit(f"tunespec diff failed ({done.returncode}): {done.stderr}")
    sys.stderr.write(done.stderr)
    return f"{MARKER}\n{done.stdout}", done.returncode


def github(method: str, url: str, token: str, payload: dict = None) -> object:
    request = urllib.request.Request(url, method=method, data=json.dumps(payload).encode() if payload else None,
                                     headers={"Authorization": f"Bearer {token}",
                                              "Accept": "application/vnd.github+json"})
    with urllib.request.urlopen(request) as response:
        return json.loads(response.read() or b"null")


def post(body: str) -> None:
    token, repository = os.environ["GITHUB_TOKEN"], os.environ["GITHUB_REPOSITORY"]
    api = os.environ.get("GITHUB_API_URL", "https://api.github.com")
    number = json.loads(Path(os.environ["GITHUB_EVENT_PATH"]).read_text())["pull_request"]["number"]
    comments_url = f"{api}/repos/{repository}/issues/{number}/comments"
    page = 1
    while True:
        comments = github("GET", f"{comments_url}?per_page=100&page={page}", token)
        mine = [c for c in comments if c["body"].startswith(MARKER)]
        if mine:
            github("PATCH", f"{api}/repos/{repository}/issues/comments/{mine[0]['id']}", token, {"body": body})
            return
        if len(comments) < 100:
            break
        page += 1
    github("POST", comments_url, token, {"body": body})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-ref", required=True, help="the branch the pull request merges into, e.g. origin/main")
    parser.add_argument("--output", help="also write the comment body to this file")
    parser.add_argument("--post", action="store_true", help="post or update the pull request's comment")
    parser.add_argument("paths", nargs="*")
    args = parser.parse_args()
    body, code = comment_body(args.base_ref, args.paths)
    if args.output:
        Path(args.output).write_text(body, encoding="utf-8")
    else:
        sys.stdout.write(body)
    if args.post:
        post(body)
    return INVALID_SPEC if code == INVALID_SPEC else 0


if __name__ == "__main__":
    sys.exit(main())
