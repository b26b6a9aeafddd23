#!/usr/bin/env bash
# Fetches the GraphiQL playground's JavaScript and CSS into DIR so that the
# server can serve them itself (`catalynx serve --playground-assets DIR`):
# the playground then works with no internet access.
#
#   scripts/fetch-playground-assets.sh [DIR]    (default: playground-assets)
#
# Needs npm. The packages come from the npm registry at the pinned versions
# below, checked against their pinned integrity hashes, and are unpacked as
# DIR/<name>@<version>/... (the layout the server's page expects; keep the
# versions in step with src/http/playground.rs). DIR is ignored by git: no
# third-party JavaScript is committed.
set -euo pipefail

dir="${1:-playground-assets}"
packages=(
  "graphiql@3.9.0 sha512-rJYFlHdBbug9+YbFSwRVvgfPjCayC7wHecZkx/qB4XLuQPFQZw/yB9pmHFtOJV6RiNBBHro3u1GdocKa3YcGRA=="
  "react@18.3.1 sha512-wS+hAgJShR0KhEvPJArfuPVN1+Hz1t0Y6n5jLrGQbkb4urgPE/0Rve+1kMB1v/oWgHgm4WIcV+i7F2pTVj+2iQ=="
  "react-dom@18.3.1 sha512-5m4nQKp+rZRb09LNH59GM4BxTh9251/ylbKIbpe7TpGxfJ+9kv6BLkLBXIjjspbgbnIBNqlI23tRnTWT0snUIw=="
)

command -v npm >/dev/null || { echo "npm is needed (apt-get install npm)" >&2; exit 1; }
mkdir -p "$dir"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

for entry in "${packages[@]}"; do
  spec="${entry%% *}"
  integrity="${entry#* }"
  target="$dir/$spec"
  if [ -f "$target/package.json" ]; then
    echo "have $spec"
    continue
  fi
  echo "fetching $spec"
  npm pack "$spec" --pack-destination "$work" --json --silent > "$work/pack.json"
  got="$(node -e 'console.log(JSON.parse(require("fs").readFileSync(process.argv[1]))[0].integrity)' "$work/pack.json")"
  file="$(node -e 'console.log(JSON.parse(require("fs").readFileSync(process.argv[1]))[0].filename)' "$work/pack.json")"
  if [ "$got" != "$integrity" ]; then
    echo "$spec: integrity $got, expected $integrity" >&2
    exit 1
  fi
  rm -rf "$target.partial"
  mkdir -p "$target.partial"
  tar -xzf "$work/$file" -C "$target.partial" --strip-components=1
  mv "$target.partial" "$target"
done
echo "playground assets in $dir"
