"""Units of work: call mining, read and write storage. Prefect task wrappers come with orchestration."""
