"""The pure domain: status rules, fleet counting, alert detection, history.

No Kafka, no asyncio, no clock reads: every function takes the time it needs.
"""
