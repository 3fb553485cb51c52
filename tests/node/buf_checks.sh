#!/usr/bin/env bash
# The proto's Buf checks, run from anywhere:  tests/node/buf_checks.sh
#   1. buf lint with the default (STANDARD) rule set, configured by buf.yaml at the repo root;
#   2. buf breaking against the proto of the newest v* release tag, skipped (exit 0, said
#      clearly) while no release has been tagged.
# Needs `npm ci` in tests/node first: buf comes from the pinned npm package @bufbuild/buf.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
buf="$root/tests/node/node_modules/.bin/buf"
if [[ ! -x "$buf" ]]; then
    echo "buf_checks: $buf is missing; run (cd tests/node && npm ci) first" >&2
    exit 2
fi
cd "$root"

echo "buf lint: $("$buf" --version), rule set STANDARD, module proto"
"$buf" lint
echo "buf lint: ok"

if ! git rev-parse --git-dir > /dev/null 2>&1; then
    echo "buf breaking: SKIPPED - $root is not a git checkout, so there are no release tags"
    exit 0
fi
latest_tag="$(git tag --list 'v*' --sort=-version:refname | head -n 1)"
if [[ -z "$latest_tag" ]]; then
    echo "buf breaking: SKIPPED - no v* release tag yet, so there is no released proto to compare with"
    exit 0
fi
# The common git dir, so this works from a linked worktree too (where .git is a file).
git_dir="$(cd "$(git rev-parse --git-common-dir)" && pwd)"
echo "buf breaking: proto against release $latest_tag"
"$buf" breaking proto --against "$git_dir#format=git,tag=$latest_tag,subdir=proto"
echo "buf breaking: ok, no breaking change since $latest_tag"
