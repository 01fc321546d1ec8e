#!/bin/sh
# oxyfleet's Grafana entrypoint (docker compose): assemble Grafana's provisioning directory, with the alert
# contact point that matches the environment, then start Grafana.
#
# Grafana expands ${VAR} in provisioning files but cannot leave an integration out, so an unset webhook URL
# or missing SMTP server would make every notification fail. dashboards/build.py writes one notification
# file per combination (webhook, e-mail, both); this script installs the one whose variables are set:
#   OXYFLEET_ALERT_WEBHOOK_URL   webhook contact point
#   OXYFLEET_ALERT_EMAILS        e-mail contact point (needs GF_SMTP_ENABLED=true and GF_SMTP_HOST)
# With neither, no oxyfleet contact point is installed: rules still evaluate and show in Grafana, and
# nothing is sent. Usage: grafana-start.sh [command...]  (default: Grafana's own /run.sh).
set -eu

src=${OXYFLEET_PROVISIONING_SRC:-/etc/oxyfleet/provisioning}
dst=${GF_PATHS_PROVISIONING:?GF_PATHS_PROVISIONING must name a writable directory}

rm -rf "$dst"
mkdir -p "$dst/alerting"
cp -R "$src/datasources" "$src/dashboards" "$dst/"
cp "$src/alerting/rules.yaml" "$dst/alerting/"

webhook=""
email=""
if [ -n "${OXYFLEET_ALERT_WEBHOOK_URL:-}" ]; then
  webhook="webhook"
fi
if [ -n "${OXYFLEET_ALERT_EMAILS:-}" ]; then
  if [ "${GF_SMTP_ENABLED:-false}" = "true" ] && [ -n "${GF_SMTP_HOST:-}" ]; then
    email="email"
  else
    echo "oxyfleet: OXYFLEET_ALERT_EMAILS is set but GF_SMTP_ENABLED=true and GF_SMTP_HOST are not: e-mail alerts off" >&2
  fi
fi

case "$webhook-$email" in
  webhook-email) variant=notify-webhook-email.yaml ;;
  webhook-) variant=notify-webhook.yaml ;;
  -email) variant=notify-email.yaml ;;
  *) variant="" ;;
esac
if [ -n "$variant" ]; then
  cp "$src/notify/$variant" "$dst/alerting/notify.yaml"
  echo "oxyfleet: alert notifications via ${webhook}${webhook:+${email:+ and }}${email}" >&2
else
  echo "oxyfleet: no alert contact point configured (OXYFLEET_ALERT_WEBHOOK_URL, OXYFLEET_ALERT_EMAILS): alerts show in Grafana, nothing is sent" >&2
fi

if [ "$#" -gt 0 ]; then
  exec "$@"
fi
exec /run.sh
