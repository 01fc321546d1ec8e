"""oxyfleet ingester: MQTT -> validation -> InfluxDB, with nothing lost and nothing counted twice."""
