"""The store: URIs and storage, sources, WebDataset shard sets (writer, reader), the ACE++ export."""
