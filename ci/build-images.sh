#!/usr/bin/env bash
# Build hatchery/<service>:<tag> for every service in ci/services.txt.
# usage: ci/build-images.sh [TAG]   (TAG defaults to the short git sha)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

tag="${1:-$(git rev-parse --short HEAD 2>/dev/null || echo dev)}"
export DOCKER_BUILDKIT=1

built=()
while IFS= read -r line || [[ -n "$line" ]]; do
    service="${line%%#*}"
    service="${service//[[:space:]]/}"
    [[ -z "$service" ]] && continue
    image="hatchery/${service}:${tag}"
    echo "==> building ${image}"
    docker build \
        --file ci/Dockerfile \
        --build-arg "SERVICE=${service}" \
        --tag "${image}" \
        .
    built+=("${image}")
done < ci/services.txt

if [[ ${#built[@]} -eq 0 ]]; then
    echo "ci/services.txt lists no services" >&2
    exit 1
fi
printf 'built %s\n' "${built[@]}"
