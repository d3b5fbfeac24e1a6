"""Worker processes: claim jobs, run the try-on model, store results, finalise the jobs.

``dramatiq worker.app`` (or ``stayler worker``) starts them.
"""
