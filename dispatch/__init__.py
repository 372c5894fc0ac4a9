"""From a transcript to an incident at a known place, and the nearest responders alerted over MQTT."""
