#!/bin/sh
# Installs the real services the tests run against (Debian/Ubuntu): Prometheus + promtool.
# Quiet and idempotent: does nothing when both binaries are already on PATH.
set -eu

if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-test-services: prometheus/promtool missing and apt-get not available;" \
        "install Prometheus (prometheus and promtool on PATH) by hand" >&2
    exit 1
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

echo "install-test-services: installing Debian package prometheus (apt-get)" >&2
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! {
    $SUDO apt-get update -qq &&
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus
} >"$log" 2>&1; then
    cat "$log" >&2
    echo "install-test-services: apt-get failed" >&2
    exit 1
fi

# The package's postinst enables the prometheus service; the tests start their own servers, so make sure
# none is left running (containers usually forbid the start via policy-rc.d anyway).
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    $SUDO systemctl stop prometheus >/dev/null 2>&1 || true
    $SUDO systemctl disable prometheus >/dev/null 2>&1 || true
elif [ -x /etc/init.d/prometheus ]; then
    $SUDO /etc/init.d/prometheus stop >/dev/null 2>&1 || true
fi

command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 || {
    echo "install-test-services: prometheus installed but prometheus/promtool not on PATH" >&2
    exit 1
}
