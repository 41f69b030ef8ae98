"""Ray dispatch and training workloads (the next milestone).

Workers will talk to the controller only over the REST trial protocol
(:class:`hpo.client.Client`), never to the database.
"""
