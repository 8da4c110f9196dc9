"""The MQTT consumer: decode, validate, deduplicate, store in batches, dead letters, evaluate."""

from ingest.worker import IngestWorker

__all__ = ["IngestWorker"]
