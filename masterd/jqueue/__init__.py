"""The master's job queue: the job model (model.py) and its files on disk (store.py).

See the docstrings of `masterd.jqueue.model` and `masterd.jqueue.store` for the
interfaces they offer; ../shared/reference/job-queue.md for Ganeti's format.
"""
