"""The Workflows API client: typed calls (``client``), models, request bodies and rate-limit
headers; Queues pulls for the state stream (``queues``)."""
