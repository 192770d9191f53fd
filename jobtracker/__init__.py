"""jobtracker: event-sourced job status for bulk-processing workers."""

__version__ = "0.1.0"
