#!/usr/bin/env bash
# Prints the path of promtool, installing Debian's prometheus package (which ships it) when it is
# missing and we are root. Used by the deployment tests to check the alert rules.
set -euo pipefail
log() { echo "[promtool] $*" >&2; }
if command -v promtool >/dev/null 2>&1; then command -v promtool; exit 0; fi
if [ "$(id -u)" -ne 0 ]; then log "promtool missing and not root: cannot apt-get install prometheus"; exit 1; fi
log "installing Debian's prometheus package for promtool"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
# The package starts a server where an init system runs one; the tests want only the tool.
(command -v systemctl >/dev/null 2>&1 && systemctl disable --now prometheus >/dev/null 2>&1) || true
command -v promtool
