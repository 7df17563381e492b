#!/bin/sh
# Installs the real services the tests run against (Debian/Ubuntu):
#   prometheus + promtool      (Debian package prometheus)
#   prometheus-alertmanager    (Debian package prometheus-alertmanager; Debian names the binary so)
# Quiet and idempotent: installs only the packages whose binaries are missing, in one apt-get call, and does
# nothing at all when every binary is already on PATH. Leaves no daemon running: the tests start their own.
set -eu

packages=""
if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
    packages="prometheus"
fi
if ! command -v prometheus-alertmanager >/dev/null 2>&1; then
    packages="${packages:+$packages }prometheus-alertmanager"
fi

if [ -z "$packages" ]; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-test-services: missing $packages and apt-get not available; install by hand" \
        "(prometheus, promtool and prometheus-alertmanager on PATH)" >&2
    exit 1
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

echo "install-test-services: installing Debian package(s) $packages (apt-get)" >&2
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# $packages is deliberately unquoted: one word per package.
# shellcheck disable=SC2086
if ! {
    $SUDO apt-get update -qq &&
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $packages
} >"$log" 2>&1; then
    cat "$log" >&2
    echo "install-test-services: apt-get failed" >&2
    exit 1
fi

# The packages' postinst scripts enable their services; the tests start their own servers, so make sure none
# is left running (containers usually forbid the start via policy-rc.d anyway).
for service in prometheus prometheus-alertmanager; do
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        $SUDO systemctl stop "$service" >/dev/null 2>&1 || true
        $SUDO systemctl disable "$service" >/dev/null 2>&1 || true
    elif [ -x "/etc/init.d/$service" ]; then
        $SUDO "/etc/init.d/$service" stop >/dev/null 2>&1 || true
    fi
done

for binary in prometheus promtool prometheus-alertmanager; do
    command -v "$binary" >/dev/null 2>&1 || {
        echo "install-test-services: installed $packages but $binary is not on PATH" >&2
        exit 1
    }
done
