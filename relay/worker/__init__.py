"""The worker: a Celery worker process whose intake threads route accepted events and make
their first attempts, whose Celery tasks carry retries, replays and work taken over, and
whose sweeper and heartbeat keep every unit of work held by a live worker."""
