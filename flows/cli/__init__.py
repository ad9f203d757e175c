"""The aceforge command line: one module per component, every command registered on one app.

    corpus      demo-corpus, ingest, demo
    mining      mine, models, train-pair-classifier, config, describe
    training    train, infer
    operations  server, deploy, undeploy, status
    shards      shards inspect | verify | audit | export-ace
    labels      label (the labelling page, Label Studio JSON)
"""

from flows.cli.common import app
from flows.cli import corpus, mining, training, operations, shards  # noqa: F401,I001  (each registers its commands, in this order)
from flows.cli import labels  # noqa: F401,E402,I001

__all__ = ["app"]
