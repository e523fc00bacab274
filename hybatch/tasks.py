"""Names shared by the API (which enqueues) and the worker (which consumes): nothing else.

The API publishes ``RUN_BATCH_TASK`` with ``args=[batch_id]`` to ``Settings.task_queue``
after the batch row is committed; it never imports the worker. Workers send each other
``RUN_SHARD_TASK`` (``args=[batch_id, shard_index]``); beat sends ``SWEEP_TASK``.
"""

RUN_BATCH_TASK = "worker.run_batch"
RUN_SHARD_TASK = "worker.run_shard"
SWEEP_TASK = "worker.sweep"
