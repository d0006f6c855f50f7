"""Every byte that crosses Kafka: topic names, event types, JSON Schemas and codecs."""
