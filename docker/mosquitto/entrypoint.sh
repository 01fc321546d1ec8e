#!/bin/sh
# Start Mosquitto for docker compose, as the unprivileged mosquitto user (compose sets `user: 1883:1883`).
#
# The broker's users and ACL are built at every start from what is mounted, so nothing secret is baked
# into an image and a re-run of `oxyfleet devices credentials` takes effect at the next restart:
#   /run/secrets/mqtt_{ingest,health,simulator}_password   the service users' passwords (Docker secrets)
#   /mosquitto/credentials/passwd, acl                     per-device users and ACL written by
#                                                          `oxyfleet devices credentials` (optional:
#                                                          without them only the service users exist)
#   /mosquitto/config/acl                                  the service users' ACL (docker/mosquitto/acl)
#   /mosquitto/certs/server.crt, server.key                the TLS listener's certificate (required)
# A random password for the container's own healthcheck user is made here too; it only reads
# $SYS/broker/uptime.
set -eu
# Paths are the container's; the broker test runs this very script on the host with its own directories.
secrets=${OXYFLEET_SECRETS_DIR:-/run/secrets}
root=${OXYFLEET_MOSQUITTO_DIR:-/mosquitto}

fail() { echo "oxyfleet broker: $*" >&2; exit 1; }

auth="$root/data/auth"
umask 077
mkdir -p "$auth"
pw=$auth/passwd
acl=$auth/acl
: >"$pw.new"

for user in ingest health simulator; do
  file=$secrets/mqtt_${user}_password
  [ -s "$file" ] || fail "missing secret $file (see docs/operations.md, Docker)"
  mosquitto_passwd -b "$pw.new" "oxyfleet-$user" "$(tr -d '\r\n' <"$file")"
done
tr -dc 'A-Za-z0-9' </dev/urandom | head -c 32 >"$auth/healthcheck-password"
mosquitto_passwd -b "$pw.new" oxyfleet-healthcheck "$(cat "$auth/healthcheck-password")"

cp "$root/config/acl" "$acl.new"
devices=0
if [ -s "$root/credentials/passwd" ]; then
  [ -f "$root/credentials/acl" ] || fail "$root/credentials/passwd without its acl: re-run oxyfleet devices credentials"
  # A device may not take a service user's name: its line would let it read every unit's telemetry.
  if grep -E '^oxyfleet-(ingest|health|simulator|healthcheck):' "$root/credentials/passwd" >/dev/null; then
    fail "$root/credentials/passwd defines a service user; remove that line"
  fi
  cat "$root/credentials/passwd" >>"$pw.new"
  { echo; cat "$root/credentials/acl"; } >>"$acl.new"
  devices=$(grep -c ':' "$root/credentials/passwd" || true)
fi
mv "$pw.new" "$pw"
mv "$acl.new" "$acl"

for f in server.crt server.key; do
  [ -r "$root/certs/$f" ] || fail "no readable $root/certs/$f: the TLS listener needs a certificate (docs/operations.md, TLS)"
done
echo "oxyfleet broker: service users and $devices device users loaded" >&2
exec mosquitto -c "$root/config/mosquitto.conf"
