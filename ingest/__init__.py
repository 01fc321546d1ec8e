"""The ingester process: MQTT -> validation -> InfluxDB, with nothing lost and nothing counted twice."""
