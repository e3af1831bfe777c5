#!/bin/sh
# Installs phiwatch: user, directories with tight permissions, binary, config, systemd unit.
#
#   install/install.sh [--prefix DIR] [--binary PATH] [--listen ADDR] [--no-start]
#
# --prefix DIR   install under DIR instead of / (a throwaway root for testing: paths in the
#                installed config and unit point inside DIR; no user is created, nothing is
#                started)
# --binary PATH  the phiwatch binary (default: target/release/phiwatch next to this script)
# --listen ADDR  address for /healthz and /metrics in a new config (default 127.0.0.1:9464)
# --no-start     install and enable, but do not start the service
#
# Safe to run again: an existing config or secrets file is never overwritten.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
prefix=/
binary="$repo/target/release/phiwatch"
listen=127.0.0.1:9464
start=yes

while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) prefix=$2; shift 2 ;;
        --binary) binary=$2; shift 2 ;;
        --listen) listen=$2; shift 2 ;;
        --no-start) start=no; shift ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

if [ ! -x "$binary" ]; then
    echo "install.sh: no phiwatch binary at $binary (cargo build --release, or --binary PATH)" >&2
    exit 1
fi

root=${prefix%/}
system=no
if [ -z "$root" ]; then
    system=yes
    if [ "$(id -u)" != 0 ]; then
        echo "install.sh: installing into / needs root (or use --prefix DIR)" >&2
        exit 1
    fi
fi

# Paths inside the installed files: the real ones, or the prefixed ones for a test root.
etc="$root/etc/phiwatch"
lib="$root/var/lib/phiwatch"
logs="$root/var/log/ehr"
unitdir="$root/lib/systemd/system"
share="$root/usr/share/phiwatch"

if [ "$system" = yes ] && ! id phiwatch >/dev/null 2>&1; then
    useradd --system --user-group --no-create-home --home-dir /var/lib/phiwatch \
        --shell /usr/sbin/nologin --comment "phiwatch privacy monitoring agent" phiwatch
fi

umask 077
install -d -m 0755 "$root/usr/bin" "$unitdir" "$share" "$root/usr/share/doc/phiwatch"
install -m 0755 "$binary" "$root/usr/bin/phiwatch"
install -d -m 0750 "$etc"
install -d -m 0700 "$lib" "$lib/context"
install -d -m 0755 "$logs"

rewrite() {
    sed -e "s|/var/lib/phiwatch|$lib|g" \
        -e "s|/var/log/ehr|$logs|g" \
        -e "s|/etc/phiwatch|$etc|g" \
        -e "s|/usr/bin/phiwatch|$root/usr/bin/phiwatch|g" \
        -e "s|127.0.0.1:9464|$listen|g" "$1"
}

if [ ! -e "$etc/phiwatch.toml" ]; then
    rewrite "$here/phiwatch.example.toml" > "$etc/phiwatch.toml"
    chmod 0640 "$etc/phiwatch.toml"
fi
if [ ! -e "$etc/phiwatch.env" ]; then
    install -m 0600 "$here/phiwatch.env" "$etc/phiwatch.env"
fi
rewrite "$here/phiwatch.service" > "$unitdir/phiwatch.service"
chmod 0644 "$unitdir/phiwatch.service"
# Reference copies: the agent runs the built-in pack unless the config names a directory.
rm -rf "$share/policies" "$share/rules"
cp -R "$repo/policies" "$share/policies"
cp -R "$repo/rules" "$share/rules"
chmod -R u=rwX,go=rX "$share"
install -m 0644 "$repo/README.md" "$root/usr/share/doc/phiwatch/README.md"

if [ "$system" = yes ]; then
    chown -R root:phiwatch "$etc"
    chown phiwatch:phiwatch "$lib" "$lib/context"
    if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
        systemctl daemon-reload
        if [ "$start" = yes ]; then
            systemctl enable --now phiwatch.service
        else
            systemctl enable phiwatch.service
        fi
    fi
fi

"$root/usr/bin/phiwatch" check --config "$etc/phiwatch.toml" || {
    echo "install.sh: installed, but the configuration needs attention (see above)" >&2
    exit 1
}
echo "phiwatch installed under ${prefix}: config $etc/phiwatch.toml, data $lib"
