#!/bin/sh
# Build the password file from .env (never committed, never in the image), then start Mosquitto.
set -eu
: "${MQTT_INGEST_PASSWORD:?set MQTT_INGEST_PASSWORD in .env}"
: "${MQTT_HEALTH_PASSWORD:?set MQTT_HEALTH_PASSWORD in .env}"
: "${MQTT_SIMULATOR_PASSWORD:?set MQTT_SIMULATOR_PASSWORD in .env}"
pw=/mosquitto/data/passwd
umask 077
: > "$pw"
mosquitto_passwd -b "$pw" oxyfleet-ingest "$MQTT_INGEST_PASSWORD"
mosquitto_passwd -b "$pw" oxyfleet-health "$MQTT_HEALTH_PASSWORD"
mosquitto_passwd -b "$pw" oxyfleet-simulator "$MQTT_SIMULATOR_PASSWORD"
chown mosquitto:mosquitto "$pw" /mosquitto/data 2>/dev/null || true
exec /usr/sbin/mosquitto -c /mosquitto/config/mosquitto.conf
